"""Every threshold the diagnosis rules use, each with why it has its value (docs/recommendation.md)."""

from __future__ import annotations

# Cycle rows carry no spread, and two runs of one strategy on a busy desktop differ by a few
# percent; a strategy less than this much faster than a simpler one is not worth its complexity
# (or its extra memory), so the simpler one is recommended and the rule says so.
NOISE_MARGIN_FRACTION = 0.05


# Simplest first: what a user has to change in their loop to adopt each strategy. Used only to
# break near-ties (NOISE_MARGIN_FRACTION); fewer workers is simpler within one strategy.
SIMPLICITY = ("serial", "deferred_sync", "batched", "cuda_graph", "streams", "threads", "processes")


# GIL: threads are GIL-bound when they reach less than this share of what processes reach on the
# same GIL-holding work with the same worker count (1.0 = threads scale as well as processes).
# 0.75 leaves room for the normal 5-15 % thread/process difference on GIL-free work.
GIL_THREAD_TO_PROCESS_RATIO_MAX = 0.75


# Processes must themselves scale by this much before the GIL can be told apart from a lack of
# free cores (on one busy core nothing scales, and the GIL is then not what limits).
PARALLEL_HEADROOM_MIN_SPEEDUP = 1.2


# torch ops release the GIL when threads get at least this much from them.
TORCH_RELEASES_GIL_SPEEDUP = 1.3


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


# ... and most of that idle time (this share) is waiting on the host or on a sync ...
HOST_SYNC_SHARE_MIN = 0.5


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


# Processes that draw the desktop itself: closing them is not advice anyone can follow; they are
# named in the gpu_shared verdict, and apps on top of them are what the user can close.
DESKTOP_PROCESS_NAMES = {
    "xorg", "x", "xwayland", "gnome-shell", "kwin_x11", "kwin_wayland", "kwin", "plasmashell",
    "sway", "hyprland", "weston", "mutter", "cinnamon", "xfwm4", "dwm", "csrss", "explorer",
    "winlogon", "systemsettings", "searchhost", "startmenuexperiencehost", "shellexperiencehost",
    "textinputhost", "lockapp",
}


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


CAUSES = ("gil_contention", "context_switch", "worker_memory", "pcie_bandwidth", "host_sync_idle",
          "gpu_shared", "driver_model")


CUDA_PROBES = ("launch", "contention", "pcie")
