"""Private parts of :mod:`imgprof.pipeline`: the config (``config``), its checks (``checks``),
the input step (``inputs``) and the step runners and outputs (``steps``)."""
