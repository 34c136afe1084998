"""Devices: inventory (NVML or declared), memory fit, durations, placement and live leases.

Why: a 70B model in BF16 needs four 80 GiB GPUs, a 1.5B model a tenth of one; a
run of the whole matrix takes GPU-days. Before any GPU hour is spent quantgate must know which cells
can run on the machine at hand, on how many GPUs each served model goes, and in what order the
served models should run so that the GPUs stay busy. Everything here is pure Python on catalog data
(no pytest, no torch); NVML is imported only inside ``nvml_inventory``.
"""
