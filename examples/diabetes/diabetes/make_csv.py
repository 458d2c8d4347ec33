r"""Writes data/diabetes/train.csv and test.csv from scikit-learn's copy.

    pip install scikit-learn      # the example's [data] extra
    python -m diabetes.make_csv data/diabetes

The diabetes data of Efron et al. (2004): 442 patients, ten baseline
measurements each (age, sex, body mass index, blood pressure and six blood
serum measurements, unscaled) and the disease's progression one year later,
a whole number. scikit-learn's wheel carries it; this writes it as two
plain CSV files with a header row: every fifth patient (the 5th, 10th, ...
of scikit-learn's order) in test.csv, the others in train.csv. The split is
fixed, so the held-out patients are a file of their own that
``python -m tfdist.predict`` scores. The files in data/diabetes/ were
written by this script; nothing here downloads.
"""

import csv
import os
import sys

TEST_EVERY = 5


def main(argv) -> int:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  if len(argv) != 2:
    print("usage: python -m diabetes.make_csv OUT_DIR", file=sys.stderr)
    return 2
  table = datasets.load_diabetes(scaled=False)
  header = [*table.feature_names, "progression"]
  rows = [[*map(repr, map(float, values)), int(target)]
          for values, target in zip(table.data, table.target)]
  os.makedirs(argv[1], exist_ok=True)
  for name, keep in (("train.csv", lambda i: i % TEST_EVERY != 0),
                     ("test.csv", lambda i: i % TEST_EVERY == 0)):
    with open(os.path.join(argv[1], name), "w", newline="",
              encoding="utf-8") as f:
      csv.writer(f).writerows(
          [header, *(row for i, row in enumerate(rows, 1) if keep(i))])
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
