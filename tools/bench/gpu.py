#!/usr/bin/env python3
"""clipkit's CUDA path against PyTorch + transformers on the same GPU, in one run.

Why this exists
---------------
The `cuda` feature can only be measured where a GPU is, and GPU time comes in short, rare
leases: this script is the whole measurement in one command, so that a lease spends its minutes
timing, not setting up. It needs what a CUDA PyTorch machine has (python3 with torch,
transformers, safetensors, tokenizers, pillow, scikit-image) plus a clipkit binary built with
`--features cuda` (tools/cuda/build, on any machine); no cargo, no network.

What it measures (random-weight checkpoints with the real shapes, as compare.py builds them)
--------------------------------------------------------------------------------------------
1. Image tower, model only, per precision (f32, f16, bf16) and batch: PyTorch
   (`CLIPModel.get_image_features`, the model in that dtype, default SDPA attention) against
   `clipkit bench --device cuda --precision P`. Both are timed from preprocessed pixels in host
   memory to embeddings in host memory, as `clipkit bench` times itself: PyTorch copies the batch
   to the GPU and the embeddings back inside the timed call (which also synchronises).
2. Text tower, texts/s at the model's largest batch, prompts padded to the longest.
3. End to end from JPEG files (decode + preprocess on the CPU cores, model on the GPU):
   `clipkit bench --images DIR`, and its ratio to its own model-only rate.
4. Agreement on real photos: cosine of clipkit's CUDA embeddings (each precision) to clipkit's
   CPU f32 embeddings (held to transformers by the parity tests), and of PyTorch's f16/bf16 to
   its own f32 on the GPU, for scale.

Protocol: warm-up calls first (clipkit makes its own in every process); then --reps
repetitions in rotating engine order; a repetition's sample is the median of --iters calls;
tables give the median over repetitions and the min-max spread.

`--device cpu` runs the same protocol on the CPU with the CPU binary (f32 only): a dry run of
the script itself on a machine without a GPU, not a benchmark.

    python3 tools/bench/gpu.py --clipkit target/cuda/release/clipkit --json gpu.json > gpu.md
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as cmp  # noqa: E402  (checkpoints, photos, prompts and the clipkit driver)

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
# The shared libraries a `--features cuda` build links (candle's cudarc, dynamic linking).
CUDA_LIBS = ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libnvrtc.so.13"]


def log(*a) -> None:
    print("[gpu]", *a, file=sys.stderr, flush=True)


def cuda_library_path() -> str:
    """Folders holding the CUDA 13 libraries clipkit links, from this Python's NVIDIA wheels
    (PyTorch's own) or the system, joined for LD_LIBRARY_PATH."""
    dirs: list[str] = []
    for lib in CUDA_LIBS:
        hits = []
        for base in sys.path:
            hits += glob.glob(os.path.join(base, "nvidia", "**", lib), recursive=True)
        hits += glob.glob(f"/usr/local/cuda*/lib64/{lib}") + glob.glob(f"/usr/lib/x86_64-linux-gnu/{lib}")
        if not hits:
            log(f"WARNING: {lib} not found under this Python's nvidia packages or /usr/local/cuda")
            continue
        d = os.path.dirname(hits[0])
        if d not in dirs:
            dirs.append(d)
    # The driver's libcuda.so.1, where the container mounts it outside the loader's default path.
    dirs += [d for d in ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib") if os.path.isdir(d)]
    return ":".join(dirs)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def machine(device: str, binary: Path) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpu_cores": os.cpu_count(),
            "clipkit_binary": str(binary)}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info |= {"gpu": p.name, "sms": p.multi_processor_count, "gpu_memory_gib": round(p.total_memory / 2**30, 1),
                 "cuda_runtime": torch.version.cuda}
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return info


def median_spread(xs: list[float]) -> str:
    if not xs:
        return "—"
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}–{max(xs):.1f})"


def ratio(num: list[float], den: list[float]) -> str:
    return f"{statistics.median(num) / statistics.median(den):.2f}×" if num and den else "—"


def run_model(arch: str, args, ck: cmp.Clipkit, photos: dict[str, Path], results: dict) -> None:
    from transformers import CLIPModel, CLIPTokenizer

    name = cmp.MODEL_NAMES[arch]
    model_dir = cmp.ensure_model(arch, args.work)
    dev = args.device
    ck_dev = ("--device", dev)
    tok = CLIPTokenizer.from_pretrained(str(model_dir))
    s = transformers.CLIPConfig.from_pretrained(str(model_dir)).vision_config.image_size
    batches = args.large_batches if arch == "l14" else args.batches
    gen = torch.Generator().manual_seed(cmp.INPUT_SEED)
    pixels = {b: torch.randn(b, 3, s, s, generator=gen) for b in batches}
    prompts = cmp.clipkit_prompts()
    text_batch = max(batches)
    enc = tok([prompts[i % len(prompts)] for i in range(text_batch)], padding="longest", return_tensors="pt")
    rates: dict[tuple, list[float]] = {}
    agree = results["agreement"].setdefault(name, {})
    cos_files = sorted(photos["cos"].glob("*.jpg"))

    # ---- agreement: clipkit on the device against clipkit f32 on the CPU -------------
    ref = ck.embed(model_dir, photos["cos"], "f32", ("--device", "cpu"))
    ref = np.stack([ref[p.name] for p in cos_files])
    for prec in args.precisions:
        try:
            got = ck.embed(model_dir, photos["cos"], prec, ck_dev)
        except Exception as e:  # noqa: BLE001 - an unsupported precision must not end the run
            agree[f"clipkit {dev} {prec}"] = {"error": str(e)[-300:]}
            continue
        c = cmp.cosines(np.stack([got[p.name] for p in cos_files]), ref)
        agree[f"clipkit {dev} {prec}"] = {"vs": "clipkit cpu f32", "mean": float(c.mean()), "min": float(c.min()),
                                          "n": len(c)}

    torch_f32 = None  # PyTorch's f32 embeddings of the largest batch, for its own f16/bf16 drift
    for prec in args.precisions:
        model = CLIPModel.from_pretrained(str(model_dir), dtype=DTYPES[prec]).eval().to(dev)

        def torch_image(b, model=model, prec=prec):
            with torch.inference_mode():
                x = pixels[b].to(dev, DTYPES[prec])
                out = model.get_image_features(pixel_values=x).pooler_output.float().cpu()
            sync(dev)
            return out

        def torch_text(model=model):
            with torch.inference_mode():
                out = model.get_text_features(input_ids=enc.input_ids.to(dev),
                                              attention_mask=enc.attention_mask.to(dev)).pooler_output.float().cpu()
            sync(dev)
            return out

        out = torch_image(batches[-1]).numpy().astype(np.float64)
        if prec == "f32":
            torch_f32 = out
        elif torch_f32 is not None:
            c = cmp.cosines(out, torch_f32)
            agree[f"PyTorch {dev} {prec}"] = {"vs": f"PyTorch {dev} f32 (random pixels)", "mean": float(c.mean()),
                                              "min": float(c.min()), "n": len(c)}

        for b in batches:
            cmp.timed_calls(lambda: torch_image(b), args.warmup)
        cmp.timed_calls(torch_text, args.warmup)
        for rep in range(args.reps):
            order = ["torch", "clipkit"] if rep % 2 == 0 else ["clipkit", "torch"]
            for b in batches:
                for engine in order:
                    if engine == "torch":
                        t = cmp.timed_calls(lambda: torch_image(b), args.iters)
                        rate = b / statistics.median(t)
                        if b == text_batch:
                            tt = cmp.timed_calls(torch_text, args.iters)
                            rates.setdefault(("text", "torch", prec, b), []).append(b / statistics.median(tt))
                    else:
                        try:
                            r = ck.bench(model_dir, b, args.iters, prec, extra=ck_dev)
                        except Exception as e:  # noqa: BLE001
                            log(f"clipkit {prec} b={b} failed: {str(e)[-300:]}")
                            results.setdefault("errors", []).append(f"{name} {prec} b={b}: {str(e)[-300:]}")
                            continue
                        rate = r["images_per_sec"]
                        results.setdefault("clipkit_runs", []).append(r)
                        if b == text_batch:
                            rates.setdefault(("text", "clipkit", prec, b), []).append(r["texts_per_sec"])
                    rates.setdefault(("image", engine, prec, b), []).append(rate)
                    log(f"{name} {prec:4s} b={b:<4d} rep {rep} {engine:8s} {rate:10.1f} images/s")
        del model
        if dev == "cuda":
            torch.cuda.empty_cache()

    e2e: dict[str, dict[str, list[float]]] = {}
    if arch in args.e2e_models:
        for folder in ("web", "12mp"):
            prec = "f16" if "f16" in args.precisions else args.precisions[0]
            for rep in range(args.reps):
                try:
                    r = ck.bench(model_dir, args.e2e_batch, args.e2e_iters, prec, images=photos[folder],
                                 extra=ck_dev)
                except Exception as e:  # noqa: BLE001
                    log(f"clipkit e2e {folder} {prec} failed: {str(e)[-300:]}")
                    break
                ee = r["end_to_end"]
                run = e2e.setdefault(f"{folder} {prec} batch {args.e2e_batch}", {"rate": [], "ratio": []})
                run["rate"].append(ee["images_per_sec"])
                run["ratio"].append(ee["ratio_to_model_only"])
                log(f"{name} e2e {folder} {prec} rep {rep}: {ee['images_per_sec']:.1f} images/s "
                    f"({ee['ratio_to_model_only']:.2f}x model only, {ee['failed']} failed)")
    results["rates"][name] = {"|".join(map(str, k)): v for k, v in rates.items()}
    results["e2e"][name] = e2e


def render(results: dict, args) -> str:
    m = results["machine"]
    lines = [f"# clipkit {args.device} vs PyTorch, {m.get('gpu', 'CPU')}",
             "", f"torch {m['torch']}, transformers {m['transformers']}"
             + (f", CUDA {m.get('cuda_runtime')}, driver {m.get('driver')}" if args.device == "cuda" else "")
             + f"; {m['cpu_cores']} CPU cores; images/s (texts/s), median (min–max) of {args.reps} repetitions", ""]
    for name, rates in results["rates"].items():
        get = lambda *k: rates.get("|".join(map(str, k)), [])  # noqa: E731
        lines += [f"## {name}", "",
                  "| precision | batch | PyTorch | clipkit | clipkit ÷ PyTorch |", "| --- | --- | --- | --- | --- |"]
        batches = args.large_batches if name == cmp.MODEL_NAMES["l14"] else args.batches
        for prec in args.precisions:
            for b in batches:
                t, c = get("image", "torch", prec, b), get("image", "clipkit", prec, b)
                lines.append(f"| {prec} | {b} | {median_spread(t)} | {median_spread(c)} | {ratio(c, t)} |")
            t, c = get("text", "torch", prec, max(batches)), get("text", "clipkit", prec, max(batches))
            lines.append(f"| {prec} text | {max(batches)} | {median_spread(t)} | {median_spread(c)} | {ratio(c, t)} |")
        e2e = results["e2e"].get(name)
        if e2e:
            lines += ["", "End to end from JPEG files (clipkit; ratio to its own model-only rate):", ""]
            for what, run in e2e.items():
                lines.append(f"- {what}: {median_spread(run['rate'])} images/s, "
                             f"{statistics.median(run['ratio']):.2f}× model only")
        lines.append("")
    lines += ["## Agreement (cosine, real photos)", ""]
    for name, ag in results["agreement"].items():
        for k, v in ag.items():
            lines.append(f"- {name} {k}: " + (f"mean {v['mean']:.6f}, min {v['min']:.6f} (vs {v['vs']})"
                                              if "mean" in v else f"ERROR {v['error']}"))
    if results.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {e}" for e in results["errors"]]
    return "\n".join(lines) + "\n"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    strs = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--clipkit", type=Path, default=cmp.REPO / "target" / "cuda" / "release" / "clipkit")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--work", type=Path, default=Path("/tmp/clipkit-gpu-bench"))
    ap.add_argument("--models", type=strs, default=["b32", "l14"])
    ap.add_argument("--precisions", type=strs, help="f32,f16,bf16 (default all; --device cpu: f32)")
    ap.add_argument("--batches", type=ints, default=[1, 32, 128], help="ViT-B/32 batches (1,32,128)")
    ap.add_argument("--large-batches", type=ints, default=[32], help="ViT-L/14 batches (32)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--e2e-models", type=strs, default=["b32"])
    ap.add_argument("--e2e-batch", type=int, default=128)
    ap.add_argument("--e2e-iters", type=int, default=3, help="timed passes per end-to-end run (3)")
    ap.add_argument("--web-files", type=int, default=256)
    ap.add_argument("--12mp-files", dest="mp12_files", type=int, default=32)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    a.precisions = a.precisions or (["f32"] if a.device == "cpu" else ["f32", "f16", "bf16"])
    for p in a.precisions:
        if p not in DTYPES:
            ap.error(f"unknown precision {p!r} (f32, f16, bf16)")
    a.e2e_models = [m for m in a.e2e_models if m in a.models]
    return a


def main() -> None:
    args = parse_args()
    if not args.clipkit.is_file():
        sys.exit(f"{args.clipkit}: no clipkit binary (tools/cuda/build, or --clipkit PATH)")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("torch sees no CUDA device")
        libs = cuda_library_path()
        os.environ["LD_LIBRARY_PATH"] = ":".join(x for x in (libs, os.environ.get("LD_LIBRARY_PATH")) if x)
        log(f"LD_LIBRARY_PATH for clipkit: {os.environ['LD_LIBRARY_PATH']}")
        torch.backends.cuda.matmul.allow_tf32 = False  # f32 means f32 on both sides
        torch.backends.cudnn.allow_tf32 = False
    info = machine(args.device, args.clipkit)
    log(json.dumps(info))
    results = {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "agreement": {}, "rates": {}, "e2e": {}}
    args.work.mkdir(parents=True, exist_ok=True)
    photos = cmp.ensure_photos(args.work, False, args.web_files, args.mp12_files)
    ck = cmp.Clipkit(args.clipkit, os.cpu_count() or 1)
    t0 = time.perf_counter()
    for arch in args.models:
        run_model(arch, args, ck, photos, results)
        log(f"{arch} done at {time.perf_counter() - t0:.0f} s")
    report = render(results, args)
    print(report)
    if args.json:
        args.json.write_text(json.dumps(results | {"markdown": report}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
