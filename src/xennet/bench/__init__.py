"""``xennet bench``: each figure a median of several runs, beside its peers measured in the same run.

* ``small``: 64 B frames through the full protocol between two domain processes, both ways,
  beside a Unix socketpair between two processes (and the C reference, ``cref``);
* ``bulk``: 64 KiB GSO frames, beside memcpy of the same bytes over a working set larger than
  the last-level cache;
* ``rx``: backend -> guest under each packing;
* ``link``: iperf3 and ping through ``xennet link``, beside a veth pair and the naive relay;
* ``cref``: the C reference with the real ring.h macros;
* ``scale``: one backend serving 32 guests.
"""
