"""Reading saved benchmark runs (pytest-benchmark JSON with compressbench's ``extra_info``)."""
