"""Parts of ``python -m benchmarks.gpu_check`` (the GPU check; see ``benchmarks/gpu_check.py``).

* ``report``: rows, the incrementally written JSON file and the printed table;
* ``plan``: the settings of a full (GPU) and a ``--quick`` (CPU) run and the rows each section must produce;
* ``runner``: each section in its own process with a time cap; missing rows become FAILED rows;
* ``timing``: warm-up plus capped timed iterations, peak memory of a step;
* ``model_speed``: logits and gradients of ``models/`` against the reference, clips/s, memory, compile;
* ``batch_search``: the largest training batch that fits (doubling, then bisection);
* ``toy_run``: ``main.py`` through torchrun on toy data (train, auto-resume, 4x3 eval) and a process-group check;
* ``loader_rate``: the train DataLoader's clips/s with every CPU core, against the model's training clips/s.
"""
