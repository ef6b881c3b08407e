"""The readers behind collect_env's fields, against fake files: pip dist-info and conda-meta
folders, torch's Requires-Dist pins, ld.so.cache bytes, DLL version resources, library file
names and headers, and the compiler `--version` runner (with fake executables)."""

from __future__ import annotations

import os
import stat
import struct
import sys
import time

import pytest

from gpudiag.backends import cuda_libs, libversions, packages
from gpudiag.platform import ldcache, libraries, toolchain

TORCH_CU124_METADATA = """Metadata-Version: 2.1
Name: torch
Version: 2.6.0+cu124
Requires-Dist: filelock
Requires-Dist: nvidia-cuda-runtime-cu12==12.4.127; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: nvidia-cudnn-cu12==9.1.0.70; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: nvidia-nvjitlink-cu12 (==12.4.127) ; platform_system == "Linux"
Requires-Dist: cuda-toolkit[cublas,cudart]==13.0.2
Requires-Dist: triton==3.2.0; platform_system == "Linux"
Requires-Dist: sympy>=1.13.3

Body text mentioning Requires-Dist: not-a-pin==0
"""


def make_site(tmp_path, dists):
    """A fake site-packages with {folder name: METADATA text or None}."""
    site = tmp_path / "site-packages"
    site.mkdir(exist_ok=True)
    for folder, meta in dists.items():
        d = site / folder
        d.mkdir()
        if meta is not None:
            (d / ("PKG-INFO" if folder.endswith(".egg-info") else "METADATA")).write_text(meta)
    return str(site)


# ------------------------------------------------------------------ pip and conda

def test_pip_scan_reads_folder_names_and_covers_every_cuda_wheel(tmp_path):
    site = make_site(tmp_path, {
        "torch-2.6.0+cu124.dist-info": TORCH_CU124_METADATA,
        "nvidia_cusparse_cu12-12.3.1.170.dist-info": None, "nvidia_nvjitlink_cu12-12.1.105.dist-info": None,
        "nvidia_cufft_cu12-11.2.1.3.dist-info": None, "nvidia_cudnn_cu12-9.1.0.70.dist-info": None,
        "nvidia_cuda_runtime_cu12-12.4.127.dist-info": None, "numpy-2.1.0.dist-info": None,
        "requests-2.32.0.dist-info": None, "onnxruntime_gpu-1.19.0.dist-info": None,
        "mkl-2024.0.dist-info": None, "hipsparse-1.0.dist-info": None, "relationship-1.0.dist-info": None,
        "oldpkg.egg-info": "Metadata-Version: 1.0\nName: flash-attn\nVersion: 2.5.0\n",
    })
    dists = packages.scan_distributions([site])
    pip = packages.pip_packages(dists=dists)
    names = {p["name"]: p["version"] for p in pip}
    for want in ("torch", "nvidia-cusparse-cu12", "nvidia-nvjitlink-cu12", "nvidia-cufft-cu12", "numpy",
                 "onnxruntime-gpu", "mkl", "flash-attn", "hipsparse"):
        assert want in names, want
    assert "requests" not in names and "relationship" not in names
    assert names["nvidia-cusparse-cu12"] == "12.3.1.170" and names["flash-attn"] == "2.5.0"


def test_first_distribution_on_the_path_wins(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_site(tmp_path / "a", {"numpy-2.0.0.dist-info": None})
    b = make_site(tmp_path / "b", {"numpy-1.26.4.dist-info": None})
    assert [p["version"] for p in packages.pip_packages([a, b])] == ["2.0.0"]


def test_metadata_pins_all_three_formats():
    pins = packages.metadata_pins(TORCH_CU124_METADATA)
    assert pins["nvidia-cuda-runtime-cu12"]["version"] == "12.4.127"
    assert "Linux" in pins["nvidia-cuda-runtime-cu12"]["marker"]
    assert pins["nvidia-nvjitlink-cu12"]["version"] == "12.4.127"  # the old "(==x)" form
    assert pins["cuda-toolkit"] == {"name": "cuda-toolkit", "version": "13.0.2", "extras": ["cublas", "cudart"],
                                    "marker": None}
    assert "sympy" not in pins and "filelock" not in pins and "not-a-pin" not in pins


def test_cuda_check_finds_pin_suffix_and_toolkit_mismatches():
    pins = {k: v for k, v in packages.metadata_pins(TORCH_CU124_METADATA).items()}
    installed = [
        {"name": "nvidia-cuda-runtime-cu12", "version": "12.4.127", "source": "pip"},  # matches its pin
        {"name": "nvidia-nvjitlink-cu12", "version": "12.1.105", "source": "pip"},     # pin says 12.4.127
        {"name": "nvidia-cublas-cu11", "version": "11.11.3.6", "source": "pip"},       # CUDA 11 wheel
        {"name": "nvidia-cusparse-cu12", "version": "12.3.1.170", "source": "pip"},    # own numbering: fine
        {"name": "nvidia-cuda-nvrtc-cu12", "version": "12.1.105", "source": "pip"},    # unpinned, older minor
        {"name": "cuda-cudart", "version": "12.6.77", "source": "conda"},              # newer minor: fine
        {"name": "pytorch-cuda", "version": "12.1", "source": "conda"},                # must equal 12.4
        {"name": "nvidia-ml-py", "version": "12.560.30", "source": "pip"},             # not a CUDA library
        {"name": "numpy", "version": "2.1.0", "source": "pip"},
    ]
    check = packages.cuda_package_checks(installed, "12.4", pins)
    bad = {m["name"]: m for m in check["mismatches"]}
    assert set(bad) == {"nvidia-nvjitlink-cu12", "nvidia-cublas-cu11", "nvidia-cuda-nvrtc-cu12", "pytorch-cuda"}
    assert bad["nvidia-nvjitlink-cu12"]["expected"] == "==12.4.127"
    assert "CUDA 11" in bad["nvidia-cublas-cu11"]["rule"]
    assert bad["nvidia-cuda-nvrtc-cu12"]["expected"] == ">=12.4"
    assert "nvidia-ml-py" not in {c["name"] for c in check["checked"]}


def test_cuda_13_unsuffixed_components_and_cpu_torch():
    installed = [{"name": "nvidia-cuda-runtime", "version": "12.8.90", "source": "pip"},
                 {"name": "nvidia-cudnn-cu13", "version": "9.24.0.43", "source": "pip"}]
    check = packages.cuda_package_checks(installed, "13.0")
    assert [m["name"] for m in check["mismatches"]] == ["nvidia-cuda-runtime"]
    cpu = packages.cuda_package_checks(installed, None)
    assert cpu["mismatches"] == [] and cpu["cuda_packages_without_cuda_torch"] == ["nvidia-cuda-runtime",
                                                                                  "nvidia-cudnn-cu13"]


def test_conda_meta_from_disk_without_running_conda(tmp_path):
    meta = tmp_path / "env" / "conda-meta"
    meta.mkdir(parents=True)
    records = {
        "pytorch-2.1.0-py3.10_cuda12.1_cudnn8.9.2_0.json": '{"build": "py3.10_cuda12.1_cudnn8.9.2_0", '
                                                            '"channel": "https://conda.anaconda.org/pytorch", "name": "pytorch"}',
        "pytorch-cuda-12.1-ha16c6d3_5.json": '{"channel": "https://conda.anaconda.org/pytorch/linux-64"}',
        "cuda-cudart-12.1.105-0.json": '{"name": "cuda-cudart"}',
        "libcublas-12.1.0.26-0.json": "{}",
        "mkl-2023.1.0-h213fc3f_46344.json": "{}",
        "zlib-1.2.13-h5eee18b_0.json": "{}",
        "history": "",
    }
    for fn, text in records.items():
        (meta / fn).write_text(text)
    out = packages.conda_packages(environ={"CONDA_PREFIX": str(tmp_path / "env")})
    got = {p["name"]: p for p in out["packages"]}
    assert set(got) == {"pytorch", "pytorch-cuda", "cuda-cudart", "libcublas", "mkl"}
    assert got["pytorch"]["version"] == "2.1.0" and got["pytorch"]["build"] == "py3.10_cuda12.1_cudnn8.9.2_0"
    assert got["pytorch"]["channel"] == "pytorch" and got["pytorch-cuda"]["channel"] == "linux-64"
    assert got["cuda-cudart"]["channel"] is None and out["reason"] is None


def test_conda_prefixes_and_not_conda(tmp_path):
    (tmp_path / "env" / "conda-meta").mkdir(parents=True)
    env = str(tmp_path / "env")
    assert packages.conda_prefixes({"CONDA_PREFIX": env}, prefix=str(tmp_path / "venv")) == [env]
    assert packages.conda_prefixes({"CONDA_PREFIX": env}, prefix=env) == [env]  # the same env once
    out = packages.conda_packages([], None)
    assert out["packages"] == [] and out["reason"].startswith("not a conda environment")
    assert packages.parse_conda_record_name("cuda-cudart-12.1.105-0.json") == ("cuda-cudart", "12.1.105", "0")
    assert packages.parse_conda_record_name("history") is None


def test_collect_reads_torch_pins_from_its_dist_info(tmp_path):
    site = make_site(tmp_path, {"torch-2.6.0+cu124.dist-info": TORCH_CU124_METADATA,
                                "nvidia_cudnn_cu12-9.1.0.70.dist-info": None,
                                "nvidia_nvjitlink_cu12-12.1.105.dist-info": None})
    out = packages.collect(environ={}, paths=[site], conda_prefix_list=[], torch_cuda="12.4")
    assert out["cuda_check"]["pins"]["nvidia-cudnn-cu12"] == "9.1.0.70"
    assert [m["name"] for m in out["cuda_check"]["mismatches"]] == ["nvidia-nvjitlink-cu12"]
    assert out["conda"]["reason"].startswith("not a conda environment")


# ------------------------------------------------------------------ native library versions

def fake_pe(version=(9, 1, 0, 70), rsrc_padding=b"\0" * 40) -> bytes:
    """A minimal PE image: DOS header -> PE header -> one .rsrc section holding VS_FIXEDFILEINFO."""
    ms, ls = (version[0] << 16) | version[1], (version[2] << 16) | version[3]
    rsrc = rsrc_padding + struct.pack("<IIII", 0xFEEF04BD, 0x10000, ms, ls) + b"\0" * 36
    e_lfanew = 0x40
    opt_size = 0xF0
    section_table = e_lfanew + 24 + opt_size
    raw_ptr = section_table + 40
    dos = b"MZ" + b"\0" * 0x3A + struct.pack("<I", e_lfanew)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, opt_size, 0x22)
    section = b".rsrc\0\0\0" + struct.pack("<IIIIIIHHI", len(rsrc), 0x1000, len(rsrc), raw_ptr, 0, 0, 0, 0, 0x40000040)
    return dos + coff + b"\0" * opt_size + section + rsrc


def test_pe_version_resource(tmp_path):
    dll = tmp_path / "cudnn64_9.dll"
    dll.write_bytes(fake_pe((9, 1, 0, 70)))
    assert libversions.pe_file_version(str(dll)) == "9.1.0.70"
    (tmp_path / "not_pe.dll").write_bytes(b"ELF" + b"\0" * 100)
    assert libversions.pe_file_version(str(tmp_path / "not_pe.dll")) is None
    assert libversions.pe_file_version(str(tmp_path / "missing.dll")) is None


def test_versions_from_names_and_headers(tmp_path):
    real = tmp_path / "libcudnn.so.8.9.7"
    real.write_bytes(b"")
    (tmp_path / "libcudnn.so.8").symlink_to(real)
    assert libversions.version_from_filename(str(tmp_path / "libcudnn.so.8")) == "8.9.7"
    assert libversions.version_from_filename("/x/cudart64_12.dll") == "12"
    assert libversions.version_from_filename("/x/libcudnn.9.dylib") == "9"
    assert libversions.version_from_filename("/x/libfoo.so") is None
    h = "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 1\n#define CUDNN_PATCHLEVEL 0\n"
    assert libversions.header_version(h, "cudnn") == "9.1.0"
    assert libversions.header_version("#define CUDART_VERSION  12040\n", "cudart") == "12.4"
    assert libversions.header_version("nothing", "cudnn") is None
    with pytest.raises(ValueError):
        libversions.header_version(h, "nccl")


def ld_cache_bytes(entries, legacy_prefix=False) -> bytes:
    """An ld.so.cache in glibc's new format (optionally after an old-format table)."""
    strings = b""
    offsets = []
    base = 48 + 24 * len(entries)
    for name, path in entries:
        offsets.append((base + len(strings), base + len(strings) + len(name) + 1))
        strings += name.encode() + b"\0" + path.encode() + b"\0"
    head = b"glibc-ld.so.cache1.1" + struct.pack("<II", len(entries), len(strings)) + bytes([2, 0, 0, 0]) + b"\0" * 16
    body = b"".join(struct.pack("<iIIIQ", 0x303, k, v, 0, 0) for k, v in offsets)
    new = head + body + strings
    if legacy_prefix:
        old = b"ld.so-1.7.0" + struct.pack("<I", 0)
        new = old + b"\0" * (-len(old) % 8) + new
    return new


def test_ld_so_cache_parse_both_layouts():
    entries = [("libcudnn.so.8", "/usr/lib/x86_64-linux-gnu/libcudnn.so.8"), ("libc.so.6", "/lib/libc.so.6")]
    assert ldcache.parse(ld_cache_bytes(entries)) == entries
    assert ldcache.parse(ld_cache_bytes(entries, legacy_prefix=True)) == entries
    assert ldcache.parse(b"garbage") == [] and ldcache.parse(b"glibc-ld.so.cache1.1") == []


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/etc/ld.so.cache"),
                    reason="needs a glibc system")
def test_ld_so_cache_reader_agrees_with_ldconfig():
    import shutil
    import subprocess

    ldconfig = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)
    if ldconfig is None:
        pytest.skip("no ldconfig to compare with")
    out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30).stdout.splitlines()
    expected = [line.split(" => ", 1)[1].strip() for line in out[1:] if " => " in line]
    assert [p for _name, p in ldcache.read()] == expected


def test_cuda_libs_linux_fake_root(tmp_path):
    root = tmp_path / "root"
    libdir = root / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (libdir / "libcudnn.so.8.9.7").write_bytes(b"")
    (libdir / "libcudnn.so.8").symlink_to("libcudnn.so.8.9.7")
    (libdir / "libcudnn_ops_infer.so.8.9.7").write_bytes(b"")
    (root / "etc").mkdir()
    (root / "etc/ld.so.cache").write_bytes(ld_cache_bytes([
        ("libcudnn.so.8", "/usr/lib/x86_64-linux-gnu/libcudnn.so.8"),
        ("libcudnn_ops_infer.so.8", "/usr/lib/x86_64-linux-gnu/libcudnn_ops_infer.so.8.9.7"),
        ("libz.so.1", "/lib/libz.so.1")]))
    (root / "usr/include").mkdir(parents=True)
    (root / "usr/include/cudnn_version.h").write_text("#define CUDNN_MAJOR 8\n#define CUDNN_MINOR 9\n"
                                                      "#define CUDNN_PATCHLEVEL 7\n")
    site = tmp_path / "site"
    wheel = site / "nvidia" / "cudnn"
    (wheel / "lib").mkdir(parents=True)
    (wheel / "include").mkdir()
    (wheel / "lib" / "libcudnn.so.9").write_bytes(b"")
    (wheel / "lib" / "libcudnn_graph.so.9").write_bytes(b"")
    (wheel / "include" / "cudnn_version.h").write_text("#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 1\n"
                                                       "#define CUDNN_PATCHLEVEL 0\n")
    torch_dir = tmp_path / "torch"
    (torch_dir / "lib").mkdir(parents=True)
    (torch_dir / "lib" / "libcudnn.so.8").write_bytes(b"")  # an older wheel that bundles cuDNN
    out = libraries.find_cuda_lib("cudnn", "linux", root=str(root), environ={}, paths=[str(site)], torch_dir=str(torch_dir))
    assert [(os.path.basename(x["path"]), x["version"]) for x in out["system"]] == [
        ("libcudnn.so.8.9.7", "8.9.7"), ("libcudnn_ops_infer.so.8.9.7", "8.9.7")]
    assert out["system_source"] == "/etc/ld.so.cache"
    assert [(os.path.basename(x["path"]), x["version"], x["version_source"]) for x in out["wheels"]] == [
        ("libcudnn.so.9", "9.1.0", "cudnn_version.h")]
    assert [x["version"] for x in out["torch"]] == ["8"]
    assert [h["version"] for h in out["headers"]] == ["8.9.7"]


def test_cuda_libs_no_ld_cache_says_so(tmp_path):
    out = libraries.find_cuda_lib("cudart", "linux", root=str(tmp_path), environ={}, paths=[], torch_dir=None)
    assert out["system"] == [] and "ld.so.cache" in out["system_reason"]


def test_cuda_libs_windows_walks_cuda_path_like_where_r(tmp_path):
    cuda = tmp_path / "CUDA" / "v12.4"
    (cuda / "bin" / "x64").mkdir(parents=True)
    (cuda / "bin" / "cudnn64_8.dll").write_bytes(fake_pe((8, 9, 7, 29)))
    (cuda / "bin" / "x64" / "cudnn_ops_infer64_8.dll").write_bytes(fake_pe((8, 9, 7, 29)))
    (cuda / "bin" / "cudart64_12.dll").write_bytes(fake_pe((6, 14, 11, 12040)))
    torch_dir = tmp_path / "torch"
    (torch_dir / "lib").mkdir(parents=True)
    (torch_dir / "lib" / "cudnn64_9.dll").write_bytes(fake_pe((9, 1, 0, 70)))
    env = {"CUDA_PATH": str(cuda), "ProgramFiles": str(tmp_path / "nothing")}
    out = libraries.find_cuda_lib("cudnn", "windows", environ=env, paths=[], torch_dir=str(torch_dir))
    assert [(os.path.basename(x["path"]), x["version"]) for x in out["system"]] == [
        ("cudnn64_8.dll", "8.9.7.29"), ("cudnn_ops_infer64_8.dll", "8.9.7.29")]
    assert out["torch"] == [{"path": str(torch_dir / "lib" / "cudnn64_9.dll"), "version": "9.1.0.70",
                             "version_source": "DLL version resource"}]
    rt = libraries.find_cuda_lib("cudart", "windows", environ=env, paths=[], torch_dir=str(torch_dir))
    assert [os.path.basename(x["path"]) for x in rt["system"]] == ["cudart64_12.dll"]


def test_cuda_libs_macos_lists_usr_local_cuda_lib(tmp_path):
    lib = tmp_path / "usr" / "local" / "cuda" / "lib"
    lib.mkdir(parents=True)
    for name in ("libcudart.10.2.dylib", "libcudnn.7.dylib", "README"):
        (lib / name).write_bytes(b"x")
    out = libraries.find_cuda_lib("cudart", "macos", root=str(tmp_path), environ={}, paths=[], torch_dir=None)
    assert [os.path.basename(x["path"]) for x in out["system"]] == ["libcudart.10.2.dylib"]
    assert out["system_source"] == "/usr/local/cuda/lib" and out["system_reason"] is None


def test_cuda_libs_asks_no_os_of_its_own(tmp_path):
    """backends.cuda_libs reads only the places it is given (platform.libraries decides them per OS)."""
    (tmp_path / "libcudnn.so.9").write_bytes(b"x")
    search = {"paths": [], "walk": [], "listed": [str(tmp_path)], "source": "here", "reason": None, "toolkits": []}
    out = cuda_libs.find("cudnn", search, environ={}, paths=[], torch_dir=None)
    assert [os.path.basename(x["path"]) for x in out["system"]] == ["libcudnn.so.9"] and out["system_source"] == "here"
    assert libraries.nvml_library_name("windows") == "nvml.dll"
    assert libraries.nvml_library_name("linux") == "libnvidia-ml.so.1"


def test_rocm_install_version(tmp_path):
    (tmp_path / ".info").mkdir()
    (tmp_path / ".info" / "version").write_text("6.2.0-66\n")
    (tmp_path / "include" / "miopen").mkdir(parents=True)
    (tmp_path / "include" / "miopen" / "version.h").write_text(
        "#define MIOPEN_VERSION_MAJOR 3\n#define MIOPEN_VERSION_MINOR 2\n#define MIOPEN_VERSION_PATCH 0\n")
    out = cuda_libs.rocm({"ROCM_PATH": str(tmp_path)})
    assert out["rocm"] == "6.2.0-66" and out["miopen"] == "3.2.0" and out["reason"] is None
    assert cuda_libs.rocm({"ROCM_PATH": str(tmp_path / "none")})["reason"].startswith("no ROCm")


# ------------------------------------------------------------------ compilers and libc

@pytest.mark.parametrize("tool,text,expected", [
    ("gcc", "gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0\nCopyright (C) 2021", "(Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0"),
    ("clang", "Ubuntu clang version 14.0.0-1ubuntu1.1\nTarget: x86_64", "14.0.0-1ubuntu1.1"),
    ("cmake", "cmake version 3.30.2\n\nCMake suite maintained", "version 3.30.2"),
    ("nvcc", "Cuda compilation tools, release 12.4, V12.4.131\nBuild cuda_12.4", "12.4.131"),
    ("gcc", "x86_64-w64-mingw32-gcc.exe (MinGW-W64) 13.2.0", "(MinGW-W64) 13.2.0"),
    ("cmake", "nothing useful", None),
])
def test_version_parsing_matches_collect_env(tool, text, expected):
    # the captures in shared/research/captures/torch-collect-env_wsl2.txt print these values
    assert toolchain.parse_version(tool, text) == expected


def fake_tool(folder, name, body):
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="fake tools are shell scripts")
def test_toolchain_runs_found_tools_concurrently_and_kills_a_hung_one(tmp_path):
    tools = {"gcc": fake_tool(tmp_path, "gcc", 'echo "gcc (Fake 1.0) 13.1.0"'),
             "cmake": fake_tool(tmp_path, "cmake", "exec sleep 60"),
             "nvcc": fake_tool(tmp_path, "nvcc", "exit 3")}
    t0 = time.monotonic()
    # The deadline leaves a busy machine time to start the quick tools; the hung one would take 60 s.
    out = toolchain.start(environ={}, kind="linux", which=tools.get, deadline_s=2.0).result()
    assert time.monotonic() - t0 < 60
    assert out["gcc"]["version"] == "(Fake 1.0) 13.1.0" and out["gcc"]["source"] == "gcc --version"
    assert out["cmake"]["version"] is None and "killed" in out["cmake"]["reason"]
    assert out["nvcc"]["reason"] == "`nvcc --version` exited with 3"
    assert out["clang"]["reason"] == "not found: no `clang` on PATH" and out["clang"]["path"] is None


def test_nvcc_off_path_found_through_cuda_home_version_json(tmp_path):
    (tmp_path / "version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "12.4.1"}, '
                                           '"cuda_nvcc": {"name": "CUDA NVCC", "version": "12.4.131"}}')
    out = toolchain.start(environ={"CUDA_HOME": str(tmp_path)}, kind="linux", which=lambda n: None).result()
    assert out["nvcc"]["version"] == "12.4.131" and out["nvcc"]["on_path"] is False
    assert out["nvcc"]["source"].endswith("version.json")
    none = toolchain.start(environ={}, kind="windows", which=lambda n: None).result()
    assert none["nvcc"]["version"] is None and "CUDA_HOME / CUDA_PATH" in none["nvcc"]["reason"]


def test_libc():
    assert toolchain.libc_version("windows")["reason"].startswith("N/A: Windows")
    assert toolchain.libc_version("macos")["version"] is None
    if sys.platform.startswith("linux"):
        import platform

        lib, ver = platform.libc_ver()
        got = toolchain.libc_version("linux")
        assert got["version"] == (f"{lib}-{ver}" if lib else None)


def test_an_unreadable_fact_becomes_a_reason_not_a_traceback(monkeypatch):
    from gpudiag.platform import cpu_features, inventory

    def broken(*a, **k):
        raise IndexError("unexpected /proc/cpuinfo layout")

    monkeypatch.setattr(cpu_features, "facts", broken)
    out = inventory.collect(environ={}, kind="linux", pending=toolchain.start(environ={}, which=lambda n: None))
    assert out["cpu_features"]["reason"] == "CPU features not read: IndexError: unexpected /proc/cpuinfo layout"
    assert out["cpu_features"]["rows"] == [] and out["packages"]["pip"]  # the rest is still there
