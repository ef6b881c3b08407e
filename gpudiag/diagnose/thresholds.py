"""Every threshold the diagnosis rules use, each with why it has its value (docs/recommendation.md)."""

from __future__ import annotations

# The noise margin: a strategy is only "clearly" faster than a simpler one when it is faster by at least
# this much at 95 % confidence (gpudiag.diagnose.confidence.clearly_above: the low end of the interval
# of their ratio above 1 + margin). Below 5 % a gain is not worth the complexity (or extra memory) of
# the faster strategy, and it is the size of the run-to-run differences of one strategy on a quiet
# desktop; the simpler one is then recommended and the result is called a tie. (Until issue 22 only
# the medians had to be 5 % apart, with the interval above 1: a 5 % near-tie was called clear either
# way from run to run.)
NOISE_MARGIN_FRACTION = 0.05


# The plain loop must be steady for any speedup over it to be presented. Judged on its rounds'
# interquartile spread ((p75 - p25) / median), which one disturbed round cannot move - the median
# baseline is still right then - but a machine busy for most of the run does. Measured on the 2-core
# VM: quiet runs 0.8-9 % (one of them with a single round slowed to half by a burst of load), runs
# with another program busy 41-72 %. 20 % is twice the quiet worst and half the busy best.
BASELINE_IQR_MAX = 0.20


# The interquartile spread is taken from this many rounds on: with fewer, the middle half is one or two
# rounds, and the report's p10-p90 spread_fraction is judged instead (BASELINE_SPREAD_MAX).
BASELINE_IQR_MIN_ROUNDS = 4


# The same judgement for a report without the plain loop's rounds (only its spread_fraction, p90 - p10
# over median, which with few rounds is nearly the full range): quiet 3-15 %, busy 45-250 % there.
BASELINE_SPREAD_MAX = 0.30


# N workers sharing the same cycles cannot be more than N times faster than the plain loop: each
# is at best as fast as the plain loop alone. 10 % on top allows for a worker that runs a little
# faster with fewer intra-op threads than the plain loop; beyond it (or with the whole interval
# above N) the plain loop itself was slowed, so no speedup over it is presented.
SPEEDUP_CEILING_TOLERANCE = 0.10


# When the interval that made a tie (the fastest strategy's paired ratio over a tied one, else their
# own intervals) is wider than this (hi / lo 1.35, about +-15 %), the tie is the noise's doing, not
# the strategies': quiet-machine intervals here were within hi/lo 1.12 (issue 22's step, processes
# over threads over 6 quiet rounds: 0.94-1.06), and on 2 cores the alternatives differ by 5-90 %, so
# an interval this wide can hold both "no gain" and "a real gain". The result is then too_noisy.
WIDE_INTERVAL_RATIO = 1.35


# CPU quota: a measurement ran *throttled* when at least this share of the scheduler periods in which
# it ran ended with the quota used up (cpu.stat nr_throttled / nr_periods over its window). Each
# throttled period stalls the work for the rest of that period (up to 100 ms by default), about the
# length of one timed run here, so from a fifth of the periods on, a fifth of the timed runs carry a
# stall the strategies did not cause; the interleaved rounds' middle half (BASELINE_IQR_MAX) can then
# no longer keep them out, and more workers only take turns inside the same quota.
THROTTLED_SHARE_MIN = 0.20


# ... and over at least this many periods (half a second at the default 100 ms period): over fewer,
# one or two periods decide the share.
THROTTLED_MIN_PERIODS = 5


# The GIL rule (gpudiag.diagnose.gil_scaling, docs/gil.md "Verdict and findings"): N threads or processes
# *scale* when their speedup over one worker reaches 1 + this x (N - 1), half the ideal extra speedup: the
# midpoint between no gain (1x) and the ideal N x, so 1.5x for 2 workers and 2.5x for 4.
GIL_SCALE_FRACTION = 0.5


# ... and are *flat* when the speedup stays within a tolerance of 1x: at least this much ...
GIL_FLAT_MIN_TOLERANCE = 0.2


# ... or this many times the worst relative spread of the two 1-worker baselines, whichever is larger (a
# noisy baseline widens what counts as "no gain"; the spread of a contended N-thread row is GIL hand-off
# behaviour, not noise, so it does not count) ...
GIL_FLAT_NOISE_FACTOR = 2.0


# ... and a tolerance above this (or one so wide that "flat" and "scales" overlap: for 2 workers from 0.5
# on) leaves the verdict inconclusive instead of a guess.
GIL_FLAT_MAX_TOLERANCE = 0.6


# Simplest first: what a user has to change in their loop to adopt each strategy. Used to resolve
# ties (strategies whose intervals are not NOISE_MARGIN_FRACTION apart); fewer workers is simpler
# within one strategy.
SIMPLICITY = ("serial", "deferred_sync", "batched", "cuda_graph", "streams", "threads", "processes")


# Context switching: the share of wall time lost over ideal time-slicing when processes share the
# GPU. Below 10 % the switching cost is smaller than ordinary run-to-run noise of GPU work.
CONTEXT_SWITCH_OVERHEAD_SUPPORTED = 0.10


# PCIe: a pinned host->device copy reaching less than half the link's theoretical per-direction
# rate is underdelivering (healthy links reach 70-90 %; research/methods.md section 5).
PCIE_EFFICIENCY_LOW = 0.5


# The loop is transfer-bound when host<->device copies take at least this share of a cycle.
PCIE_TRANSFER_SHARE_SUPPORTED = 0.25


# Host sync / idle gaps: the plain loop leaves the GPU idle this share of the time or more ...
HOST_IDLE_FRACTION_MIN = 0.2


# ... and sync waits (round trips: .item(), synchronize, small blocking copies) are the largest part of
# that idle time - larger than host compute, waiting on large copies and launch overhead - and at
# least a third of it: then taking the syncs out of the loop removes the biggest idle part ...
HOST_SYNC_SHARE_MIN = 1 / 3


# ... or taking syncs out of the loop (deferred_sync) buys at least this speedup.
DEFERRED_SYNC_GAIN_MIN = 1.10


# Driver model: host-side launch overhead per kernel above this (us) is the WDDM signature;
# native Linux launches a small torch op in roughly 5-10 us (methods.md section 6: "launch time
# on the CPU side is between 5-20 microseconds"), WDDM without hardware scheduling often more.
WDDM_LAUNCH_OVERHEAD_US = 15.0


# Launch overhead this high makes a loop of small ops launch-bound whatever the driver model.
LAUNCH_BOUND_OVERHEAD_US = 15.0


# Clock-event reasons that mean the GPU is held below its clocks by heat or power, not by idling
# or by an application setting.
THROTTLE_REASON_WORDS = ("thermal", "power", "hw_slowdown")


# Finding codes of other probes that also establish an environment change when the data behind
# them is missing (older reports); the data is read first.
FINDING_CODES = {
    "launch_blocking": ("CUDA_LAUNCH_BLOCKING_ON",),
    "gpu_shared": ("GPU_SHARED_WITH_DISPLAY", "GPU_SHARED_WITH_APP", "GPU_SHARED_WITH_APPS", "GPU_SHARED"),
    "persistence": ("PERSISTENCE_MODE_OFF",),
    "throttle": ("GPU_THROTTLED", "CLOCKS_THROTTLED", "GPU_CLOCKS_THROTTLED"),
    # Not PCIE_LINK_BELOW_MAX: an idle link downtrains; only a reading under load (or a slot limit) counts.
    "pcie": ("PCIE_LINK_DEGRADED", "PCIE_LINK_DOWNGRADED", "PCIE_SLOT_LIMITS_CARD"),
}


# The causes the recommendation judges, in the order the report lists its verdicts (one rule each in
# gpudiag.diagnose.verdicts; `gpudiag watch` judges the same causes plus input_starvation).
CAUSES = ("gil_contention", "context_switch", "worker_memory", "pcie_bandwidth", "host_sync_idle",
          "gpu_shared", "driver_model")


# The probes that exercise a GPU: when none of them measured (and the cycle ran on the CPU), the GPU
# questions are unanswered and the recommendation says so.
CUDA_PROBES = ("launch", "contention", "pcie")


# Preflight (gpudiag.diagnose.preflight, docs/preflight.md): a memory need above this share of what is free
# leaves no room for the allocator's caching and the data a worker loads later: warn (above all of it: fail).
TIGHT_FRACTION = 0.9


# Preflight's swap check: without swap, workers that need over this share of the memory left warn, since
# going over then means the OOM killer rather than a slowdown ...
SWAPLESS_NEED_SHARE_MAX = 0.75


# ... and swap already over this share used before the run says the machine is short of RAM.
SWAP_USED_SHARE_MAX = 0.5


# A GPU under this utilisation (%) idles (or NVML says gpu_idle): its link's lower PCIe generation is then
# power saving, not a fault, so preflight does not warn about it.
GPU_IDLE_UTILIZATION_PERCENT = 10


# Fleet CPU share (gpudiag.fleet.cpu_verdict, docs/fleet.md "CPU share"). A rank is short of CPU when
# its timed windows got less than this share of the CPU their work could use on its cores. A rank
# alone on a quiet core measured 0.97-1.0 on the 2-core VM; two ranks on one core get 0.5 each.
FLEET_CPU_SHORT_SHARE = 0.8


# ... and a CPU quota is its cause when its cgroup ran out of quota in at least this share of the
# periods it ran in. A busy process under a binding quota is throttled in nearly every period (0.2 CPU
# on the VM: 90-100 %); a quota with headroom throttles a burst now and then.
FLEET_CPU_THROTTLED_SHARE = 0.2


# ... and other programs (or the hypervisor's steal, or the job's own other ranks) are a cause when
# they used at least this share of the rank's cores meanwhile. A quiet core shows 0-3 % (a shell, a
# monitor); below 10 % they cannot explain a shortfall of 20 %.
FLEET_CPU_LOAD_SHARE = 0.1
