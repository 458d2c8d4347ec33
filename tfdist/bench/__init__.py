r"""Benchmarks of the trainers on this machine: one command, a table, plots.

    python -m tfdist.bench --quick --out_dir=/tmp/bench   # a few minutes
    python -m tfdist.bench --out_dir=docs/bench           # full
    python -m tfdist.bench --inception --out_dir=/tmp/inc # mini-Inception

Runs the real trainer ``trainers.mnist`` (softmax regression), and in full
mode ``trainers.inception`` (mini-Inception), as real processes through
``python -m tfdist.launch``, one configuration at a time, on the MNIST IDX
files (``--runs=a,b``: only the runs whose name contains a or b), and
writes into ``--out_dir``:

* ``results.json``: the machine, the settings, every run's result lines
  (one per task), the figures below and the targets (met or missed by how
  much);
* ``results.md``: the same as Markdown tables;
* ``throughput.png``, ``sync_vs_async.png``, ``large_batch.png``, and in
  full and smoke mode ``straggler.png``;
* ``data/results.json``: the data figures (full and smoke mode);
* ``logs/<run>.log``: each run's full output.

Figures: examples/s per strategy and cluster size, weak-scaling efficiency
against one worker with the same per-worker batch and threads (softmax at
several per-worker batches, mini-Inception), the trainer's overhead against
a plain Keras ``fit`` (``tfdist.bench.baseline``) of the same model and
batch (softmax; with ``--inception`` mini-Inception too, alternated rounds),
tfdist against its peer, the TF tutorial's plain MultiWorkerMirroredStrategy
code (``tfdist.bench.peer``, same data, model, batch and pinning) at 1 and 2
workers, collectives per step (counted in the traced step) and milliseconds
per collective (the 2-worker step's extra time over its extra collectives:
each worker computes the same batch at 1 and 2 workers), milliseconds per
ps RPC (full mode: one step per scheduled function against 10),
seconds of training to a test accuracy, accuracy against training time
synchronous (multiworker) vs asynchronous (ps), the large-batch recipe at 8x
the base batch, the float16 gradient all-reduce (bytes and accuracy), and
peak resident memory per task. Full mode adds (smoke mode on tiny settings)
the straggler figure (multiworker and ps with one worker slowed to a quarter
of its speed, against the same runs without) and issue 13's data figures
(decode speed against the mini-Inception step, streamed against in-memory
examples/s and accuracy per strategy, the ps dataset function's size for
10x the data; ``--data_memory``: peak memory as the training set grows 10x,
over 1 GB of shards in ``--data_work_dir``).

Fair scaling: every task gets one compute thread (TF_NUM_INTRAOP_THREADS=1;
an inter-op pool of 2, because ps tasks deadlock with one) and, through
``python -m tfdist.bench.pin``, one core. Throughput is the median epoch
after the first: the first holds tracing and connection set-up, and it ends
in a synchronisation of all tasks (the last all-reduce, or the ps
coordinator's join), the barrier before timing. Targets are printed, not
asserted: the figures depend on the machine and on what else runs on it.

Modules, each importing only those above it (and tfdist's foundations):

* plan: the modes' settings and every run as data (Run, tagged with the
  figures it is measured for);
* runner: a run's command line, processes, deadline and result lines;
* figures: the figures and targets, runs picked by their tags;
* report: the machine, results.md and the plots;
* baseline: ``python -m tfdist.bench.baseline``, the plain Keras fit;
* peer: ``python -m tfdist.bench.peer``, the TF tutorial's multi-worker fit;
* pin: ``python -m tfdist.bench.pin``, one core per training task;
* fused_step_compare: ``python -m tfdist.bench.fused_step_compare``, Keras'
  step against tfdist.training.fused_step on one model (weights, metrics,
  timing);
* ps_steps_per_execution: ``python -m tfdist.bench.ps_steps_per_execution``,
  examples/s of ps at N steps per scheduled function;
* jobs: a job as real task processes, each watched alone (no launcher);
* chaos: ``python -m tfdist.bench.chaos``, the chaos sweep (tasks killed,
  stopped or signalled at random moments; hangs, statuses, resumes);
* straggler: ``python -m tfdist.bench.straggler``, the straggler figure;
* data_figures: ``python -m tfdist.bench.data_figures``, the data figures;
* figure_commands: those two inside the bench (rows, targets);
* __main__: the command.
"""
