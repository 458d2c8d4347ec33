r"""Writes data/breast_cancer.csv from scikit-learn's copy of the data.

    pip install scikit-learn      # the example's [data] extra
    python -m breast_cancer.make_csv data/breast_cancer.csv

The Breast Cancer Wisconsin (Diagnostic) data: 569 tumours, 30 measurements
of cell nuclei each, and the diagnosis. scikit-learn's wheel carries it; this
writes it as a plain CSV with a header row, one column per measurement and
the diagnosis as a name (benign or malignant). The CSV in data/ was written
by this script; nothing here downloads.
"""

import csv
import sys


def main(argv) -> int:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  if len(argv) != 2:
    print("usage: python -m breast_cancer.make_csv OUT.csv", file=sys.stderr)
    return 2
  table = datasets.load_breast_cancer()
  with open(argv[1], "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow([*table.feature_names, "diagnosis"])
    for values, target in zip(table.data, table.target):
      writer.writerow([*(f"{v:g}" for v in values),
                       table.target_names[target]])
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
