"""The benchmark suite (``ringkernel bench``) and its measurement helpers, apart from the runtime: nothing in
``ringkernel`` imports this subpackage. The charts need the ``[bench]`` extra (matplotlib)."""

from .measure import (RECORD, MpQueueActor, PipeActor, ThreadActor, machine_info, median_rate, percentiles,
                      pipelined_batches, records, round_trip_samples, round_trips)
from .suite import main, run

__all__ = ["RECORD", "MpQueueActor", "PipeActor", "ThreadActor", "machine_info", "median_rate", "percentiles",
           "pipelined_batches", "records", "round_trip_samples", "round_trips", "main", "run"]
