#!/usr/bin/env python3
"""Compare clipkit's CPU throughput with PyTorch (transformers, open_clip) and ONNX Runtime, in one run.

Why this exists
---------------
The benchmark tables (README, docs/benchmarks.md) must compare engines that ran on the same machine, in the same
minutes, on the same models and inputs, with the same thread count -- numbers collected on
different days (or while someone else was compiling) are not comparable. This script builds
random-weight, full-size checkpoints (no model hub needed, weights do not change speed),
exports them to ONNX, and times every engine in interleaved repetitions so that slow drift of
the machine hits all engines alike. It watches /proc/stat while it times and marks every
measurement during which *other* processes used the CPU.

Models (--models; families.py builds each and runs its reference):
  b32, l14     OpenAI CLIP ViT-B/32 and ViT-L/14, transformers CLIPModel (the default pair)
  siglip2-b16  SigLIP 2 B/16 at 224 px (google/siglip2-base-patch16-224's shapes), transformers
               SiglipModel; text padded to 64 tokens with no mask, as SigLIP reads it
  h14          open_clip ViT-H/14 (laion/CLIP-ViT-H-14-laion2B-s32B-b79K's shapes), open_clip on
               PyTorch, checkpoint in open_clip's hub layout; on request (986M parameters)

What it measures (all on CPU, --threads for every engine)
----------------------------------------------------------
1. Image tower (pixel_values -> image_embeds), model only, random preprocessed input:
     PyTorch  the family's reference (CLIPModel / SiglipModel get_image_features, open_clip
              encode_image) under torch.inference_mode(), f32
     ORT f32  vision tower + projection exported to ONNX (dynamic batch), ORT_ENABLE_ALL,
              CPUExecutionProvider
     ORT int8 onnxruntime.quantization.quantize_dynamic of that model (QInt8 weights,
              dynamically quantised uint8 activations)
     clipkit  `clipkit bench --format json` (subprocess) images_per_sec, f32, plus
              `--precision bf16|int8|f16` rows where the binary accepts the flag
2. Text tower, texts/s: the prompts of `clipkit bench` (about ten tokens), for CLIP padded to
   the longest prompt of the batch (not to 77) for PyTorch and ORT, as clipkit does; SigLIP
   and open_clip as their references lay them out (64 and 77 tokens).
3. End to end from JPEG files (decode + preprocess + model): the family's reference processor
   (transformers' CLIPProcessor given file paths, SiglipImageProcessor, open_clip's transform)
   + the image tower vs `clipkit bench --images DIR`, on web-size
   (640x480) and 12 MP (4000x3000) photos made from skimage.data; plus clipkit's end-to-end
   rate divided by its model-only rate measured in the same process, with full decodes (the
   default, transformers' pixels) and with `--jpeg-draft` (JPEGs decoded at reduced scale in
   the DCT).
4. Agreement: cosine of ORT f32 / ORT int8 to PyTorch f32 embeddings (identical
   pixel_values) and of clipkit bf16 / int8 / f16 to clipkit f32 (and clipkit f32 to PyTorch f32,
   which also includes transformers 5's torchvision resize), on real photos; and of clipkit
   f32 with `--jpeg-draft` to clipkit f32 on the web-size and 12 MP photos.

Timing protocol: every engine is warmed up first; then --reps repetitions, each timing
--iters calls per engine and batch (the per-repetition sample is the median of those calls;
clipkit reports the same median itself, after its own warm-up call). Engine order rotates
from one repetition to the next. Tables show the median over repetitions and the min-max
spread; --json keeps every raw sample.

Run it with the pinned venv (tools/bench/requirements.txt); see tools/bench/README.md.
`--quick` is a short check that every path runs, not a benchmark; `--smoke` builds 2-layer
models so that check takes seconds (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "fixtures"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

import families  # noqa: E402  (each model's checkpoint builder and reference runner)

# Models timed at --large-batches (and end to end at their largest batch).
LARGE_MODELS = {"l14", "h14"}
INPUT_SEED = 1234
OPSET = 18
ENGINE_LABELS = {
    "torch": "PyTorch f32",
    "ort": "ORT f32",
    "ort-int8": "ORT int8",
    "clipkit": "clipkit f32",
    "clipkit-bf16": "clipkit bf16",
    "clipkit-int8": "clipkit int8",
    "clipkit-f16": "clipkit f16",
}
# Fallback copy of the prompts `clipkit bench` times (crates/clipkit-cli/src/commands/bench.rs);
# the source file is read instead when present, so both sides embed the same token counts.
DEFAULT_PROMPTS = [
    "a photo of a dog on a beach at sunset",
    "a close-up photo of a small orange cat",
    "a blurry photo of a red sports car",
    "an aerial photograph of a city at night",
    "a black and white photo of an old man",
    "a painting of a sailing boat in a storm",
    "a photo of a cup of coffee on a table",
    "a cartoon drawing of a happy green dragon",
]
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "camera"]


def log(*a) -> None:
    print("[compare]", *a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# Machine state: is anybody else using the CPU while we time?
# ----------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def _busy_seconds() -> float:
    """CPU seconds all processes (and the hypervisor: steal) used since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _own_seconds() -> float:
    """CPU seconds of this process (all threads) plus its finished children (clipkit runs)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


class CpuMeter:
    """Context manager: `foreign` = CPU used by other processes during the block, as a share
    of the whole machine (0.05 = 5% of all cores)."""

    def __enter__(self):
        self.load = os.getloadavg()[0]
        self.busy0, self.own0, self.t0 = _busy_seconds(), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        busy = _busy_seconds() - self.busy0
        own = _own_seconds() - self.own0
        self.wall = wall
        self.foreign = max(0.0, busy - own) / (max(wall, 1e-3) * NCPU)
        return False


def machine_info(clipkit: Path) -> dict:
    def sh(cmd: list[str], cwd: Path | None = None) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu, family, model = "", None, None
    for line in sh(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        if key == "Model name":
            cpu = value.strip()
        elif key == "CPU family" and value.strip().isdigit():
            family = int(value)
        elif key == "Model" and value.strip().isdigit():
            model = int(value)
    # VMs often name the CPU only "AMD EPYC" or "Intel(R) Xeon(R) Processor"; the generation
    # decides the FMA width (Zen 4 splits AVX-512 into two 256-bit halves, Zen 5 and the Xeons
    # do not) and so every ratio.
    if family is not None and model is not None:
        uarch = None
        if "AMD" in cpu and family == 26:
            uarch = "Zen 5"
        elif "AMD" in cpu and family == 25:
            uarch = "Zen 4" if model >> 4 in (1, 6, 7, 0xA) else "Zen 3"
        elif "Intel" in cpu and family == 6:
            uarch = {143: "Sapphire Rapids", 207: "Emerald Rapids", 173: "Granite Rapids",
                     106: "Ice Lake", 85: "Skylake/Cascade Lake"}.get(model)
        cpu += f" ({uarch + ', ' if uarch else ''}family {family} model {model})"
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[-1].split("\n", 1)[0] if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
           if re.search(rf"\b{f}\b", flags)]
    import onnxruntime as ort

    commit = sh(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=REPO)
    return {
        "cpu": cpu or platform.processor(),
        "cores": NCPU,
        "isa": isa,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": ort.__version__,
        "clipkit_commit": commit,
        "clipkit_binary": str(clipkit),
        "clipkit_version": sh([str(clipkit), "--version"]),
        "clipkit_binary_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(clipkit.stat().st_mtime))
        if clipkit.exists() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def idle_probe(seconds: float = 2.0) -> float:
    with CpuMeter() as m:
        time.sleep(seconds)
    return m.foreign


# ----------------------------------------------------------------------------------------
# Inputs: models, ONNX files, photos, prompts (all cached under --work)
# ----------------------------------------------------------------------------------------


def export_onnx(fam: families.Family, work: Path) -> dict:
    """vision.onnx (pixel_values -> image_embeds), text.onnx (the family's text inputs ->
    text_embeds), both with dynamic batch (and, for CLIP, sequence) axes, and vision.int8.onnx."""
    d = work / "onnx" / fam.dir_name()
    paths = {"vision": d / "vision.onnx", "text": d / "text.onnx", "vision-int8": d / "vision.int8.onnx"}
    stamp = d / "export.json"
    if stamp.is_file() and all(p.is_file() for p in paths.values()):
        return json.loads(stamp.read_text()) | {k: str(v) for k, v in paths.items()}
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    s = fam.image_size
    info = {"opset": OPSET}
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=2, max=77)
    enc = fam.text_inputs(["a photo of a cat", "a photo of a dog on a beach"])
    names = fam.text_input_names
    text_dims = {0: batch, 1: seq} if fam.text_dynamic_seq else {0: batch}
    text_axes = {0: "batch", 1: "seq"} if fam.text_dynamic_seq else {0: "batch"}
    jobs = [
        ("vision", fam.vision_module(), (torch.randn(2, 3, s, s),), {"pixel_values": {0: batch}},
         ["pixel_values"], ["image_embeds"], {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}),
        ("text", fam.text_module(), tuple(torch.from_numpy(enc[n]) for n in names),
         {n: text_dims for n in names}, names, ["text_embeds"],
         {n: text_axes for n in names} | {"text_embeds": {0: "batch"}}),
    ]
    for name, mod, args, dyn, inames, onames, axes in jobs:
        log(f"exporting {name} tower of {fam.name} to ONNX (opset {OPSET})")
        t0 = time.perf_counter()
        with torch.no_grad():
            try:  # the dynamo exporter is torch's default and maintained path
                torch.onnx.export(mod, args, str(paths[name]), dynamo=True, dynamic_shapes=dyn,
                                  input_names=inames, output_names=onames, opset_version=OPSET,
                                  external_data=True, verbose=False)
                exporter = "dynamo"
            except Exception as e:  # noqa: BLE001 - fall back to the TorchScript exporter
                log(f"  dynamo export failed ({type(e).__name__}: {str(e)[:200]}); using dynamo=False")
                for p in d.glob(f"{name}.onnx*"):
                    p.unlink()
                torch.onnx.export(mod, args, str(paths[name]), dynamo=False, dynamic_axes=axes,
                                  input_names=inames, output_names=onames, opset_version=OPSET)
                exporter = "torchscript"
        info[f"{name}_export_sec"] = time.perf_counter() - t0
        info[f"{name}_exporter"] = exporter
        log(f"  {exporter} export in {info[f'{name}_export_sec']:.0f} s")

    from onnxruntime.quantization import QuantType, quantize_dynamic

    log("quantizing the vision tower (dynamic int8, QInt8 weights)")
    t0 = time.perf_counter()
    quantize_dynamic(str(paths["vision"]), str(paths["vision-int8"]), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"])
    info["quantize_sec"] = time.perf_counter() - t0
    info["quantization"] = "quantize_dynamic, QInt8 weights (per tensor), uint8 activations, MatMul/Gemm"
    log(f"  quantized in {info['quantize_sec']:.0f} s")
    stamp.write_text(json.dumps(info, indent=2) + "\n")
    return info | {k: str(v) for k, v in paths.items()}


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ensure_photos(work: Path, quick: bool, n_web: int, n_12mp: int) -> dict[str, Path]:
    """JPEG folders: web/ (640x480), 12mp/ (4000x3000, upscaled) and cos/ (one 640x480 JPEG per
    distinct photo, for the agreement checks). Made from skimage.data's bundled photos."""
    import skimage.data

    base = work / "images"
    sources = []
    for name in PHOTOS:
        try:
            sources.append((name, Image.fromarray(getattr(skimage.data, name)()).convert("RGB")))
        except Exception as e:  # noqa: BLE001 - some skimage images need a download
            log(f"skimage.data.{name} unavailable ({type(e).__name__}), skipped")
    if not sources:
        sys.exit("no skimage.data photos available")

    def fit(img: Image.Image, w: int, h: int) -> Image.Image:
        scale = max(w / img.width, h / img.height)
        r = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.BICUBIC)
        left, top = (r.width - w) // 2, (r.height - h) // 2
        return r.crop((left, top, left + w, top + h))

    out = {}
    for folder, (w, h), count in (("web", (640, 480), n_web), ("12mp", (4000, 3000), n_12mp),
                                  ("cos", (640, 480), len(sources))):
        d = base / f"{folder}-{count}"
        out[folder] = d
        if (d / ".complete").is_file():
            continue
        log(f"writing {count} {w}x{h} JPEGs to {d}")
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for i in range(count):
            name, src = sources[i % len(sources)]
            img = fit(src, w, h)
            if (i // len(sources)) % 2 == 1:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            img.save(d / f"{i:03d}_{name}.jpg", quality=90)
        (d / ".complete").write_text("")
    return out


def clipkit_prompts() -> list[str]:
    src = REPO / "crates" / "clipkit-cli" / "src" / "commands" / "bench.rs"
    try:
        block = re.search(r"const PROMPTS: &\[&str\] = &\[(.*?)\];", src.read_text(), re.S).group(1)
        prompts = re.findall(r'"((?:[^"\\]|\\.)*)"', block)
        if prompts:
            return prompts
    except (OSError, AttributeError):
        pass
    log("could not read clipkit's bench prompts from bench.rs; using the built-in copy")
    return DEFAULT_PROMPTS


# ----------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------


class Unsupported(Exception):
    pass


@dataclass
class Sample:
    """One timed block: `rate` items/s for that repetition, plus what the machine was doing."""
    section: str  # image | text | e2e-web | e2e-12mp
    model: str
    engine: str
    batch: int
    rep: int
    rate: float
    times: list[float] = field(default_factory=list)  # per-call seconds (in-process engines)
    foreign: float = 0.0
    loadavg: float = 0.0
    extra: dict = field(default_factory=dict)


def timed_calls(fn, iters: int) -> list[float]:
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class Clipkit:
    def __init__(self, binary: Path, threads: int):
        self.binary, self.threads = binary, threads
        self.unsupported: dict[str, str] = {}

    def _env(self) -> dict:
        return os.environ | {"RAYON_NUM_THREADS": str(self.threads)}

    def _run(self, cmd: list[str], precision: str) -> str:
        p = subprocess.run(cmd, capture_output=True, text=True, env=self._env())
        if p.returncode != 0:
            err = p.stderr.strip()
            if precision != "f32" and "--precision" in err:
                raise Unsupported(err.splitlines()[0] if err else "rejected --precision")
            log(f"failed: {' '.join(cmd)}")
            raise RuntimeError(f"clipkit {cmd[1]} exited {p.returncode}: {err[-800:]}")
        return p.stdout

    def bench(self, model_dir: Path, batch: int, iters: int, precision: str = "f32",
              images: Path | None = None, extra: tuple[str, ...] = ()) -> dict:
        cmd = [str(self.binary), "bench", "--model", str(model_dir), "--batch", str(batch), "--iters", str(iters),
               "--threads", str(self.threads), "--format", "json",
               # random-weight checkpoints in --work are not models `clipkit models` should list
               "--no-record"]
        if precision != "f32":
            cmd += ["--precision", precision]
        if images is not None:
            cmd += ["--images", str(images), "--batch-size", str(batch)]
        cmd += list(extra)
        r = json.loads(self._run(cmd, precision))
        if r.get("precision", "f32") != precision:
            raise Unsupported(f"asked for {precision}, clipkit reports precision {r.get('precision')!r}")
        return r

    def embed(self, model_dir: Path, images: Path, precision: str = "f32",
              extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        cmd = [str(self.binary), "embed", "--model", str(model_dir), "--image", str(images), "--format", "json"]
        cmd += list(extra)
        if precision != "f32":
            cmd += ["--precision", precision]
        r = json.loads(self._run(cmd, precision))
        return {Path(x["path"]).name: np.asarray(x["embedding"], dtype=np.float64) for x in r["images"]}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def run_model(arch: str, args, ck: Clipkit, photos: dict[str, Path], results: dict) -> None:
    fam = families.family(arch, args.smoke)
    name = fam.name
    model_dir = fam.ensure(args.work)
    fam.load(model_dir)
    results["models"][name] = {"dir": str(model_dir), **fam.describe(),
                               "build": json.loads((model_dir / "bench-model.json").read_text())}
    engines = args.engines
    use_ort = "ort" in engines
    onnx = None
    if use_ort:
        with torch.no_grad():
            onnx = export_onnx(fam, args.work)
        results["models"][name]["onnx"] = onnx
        sess = {"ort": ort_session(onnx["vision"], args.threads),
                "ort-int8": ort_session(onnx["vision-int8"], args.threads)}
        text_sess = ort_session(onnx["text"], args.threads)

    large = arch in LARGE_MODELS
    batches = args.large_batches if large else args.batches
    text_batch = args.text_batch or max(batches)
    s = fam.image_size
    gen = torch.Generator().manual_seed(INPUT_SEED)
    pixels = {b: torch.randn(b, 3, s, s, generator=gen) for b in batches}
    prompts = clipkit_prompts()
    texts = [prompts[i % len(prompts)] for i in range(text_batch)]
    enc = fam.text_inputs(texts)
    results["models"][name].update({"batches": batches, "text_batch": text_batch,
                                    "text_tokens_padded": int(next(iter(enc.values())).shape[1])})

    def torch_image(b):
        with torch.inference_mode():
            return fam.image_features(pixels[b])

    def torch_text():
        with torch.inference_mode():
            return fam.text_features(enc)

    # In-process callables per (section, engine); clipkit is driven separately (subprocess).
    image_fns = {}
    if "torch" in engines:
        image_fns["torch"] = torch_image
    if use_ort:
        for e in ("ort", "ort-int8"):
            image_fns[e] = (lambda b, e=e: sess[e].run(None, {"pixel_values": pixels[b].numpy()}))
    text_fns = {}
    if "torch" in engines:
        text_fns["torch"] = torch_text
    if use_ort:
        text_fns["ort"] = lambda: text_sess.run(None, enc)
    ck_precisions = [p for p in args.clipkit_precisions if "clipkit" in engines]

    # ---- agreement on real photos (also a check that the ONNX export is right) --------
    agree = results["agreement"].setdefault(name, {})
    cos_files = sorted(photos["cos"].glob("*.jpg"))
    pv = fam.preprocess([str(p) for p in cos_files])
    with torch.inference_mode():
        ref = fam.image_features(pv).numpy().astype(np.float64)
    if use_ort:
        for e in ("ort", "ort-int8"):
            got = sess[e].run(None, {"pixel_values": pv.numpy()})[0].astype(np.float64)
            c = cosines(got, ref)
            agree[ENGINE_LABELS[e]] = {"vs": "PyTorch f32", "mean": float(c.mean()), "min": float(c.min()),
                                       "n": len(c)}
        etxt = text_sess.run(None, enc)[0]
        c = cosines(etxt.astype(np.float64), torch_text().numpy().astype(np.float64))
        agree["ORT f32 (text)"] = {"vs": "PyTorch f32", "mean": float(c.mean()), "min": float(c.min()), "n": len(c)}
    if ck_precisions:
        ck_f32 = None
        for prec in ck_precisions:
            label = ENGINE_LABELS["clipkit" if prec == "f32" else f"clipkit-{prec}"]
            try:
                emb = ck.embed(model_dir, photos["cos"], prec)
            except Unsupported as e:
                agree[label] = {"error": f"not supported: {e}"}
                continue
            except Exception as e:  # noqa: BLE001
                agree[label] = {"error": str(e)[:300]}
                continue
            got = np.stack([emb[p.name] for p in cos_files])
            c = cosines(got, ref)
            agree[label] = {"vs": "PyTorch f32 (the reference's preprocessing)", "mean": float(c.mean()),
                            "min": float(c.min()), "n": len(c)}
            if prec == "f32":
                ck_f32 = got
                # --jpeg-draft against full decodes, on the web-size (1/2 scale) and the
                # 12 MP (1/8 scale) photos.
                for folder, what in (("cos", "640×480"), ("12mp", "4000×3000")):
                    try:
                        full = emb if folder == "cos" else ck.embed(model_dir, photos[folder], prec)
                        draft = ck.embed(model_dir, photos[folder], prec, ("--jpeg-draft",))
                    except Exception as e:  # noqa: BLE001
                        agree[f"clipkit f32 --jpeg-draft ({what})"] = {"error": str(e)[:300]}
                        continue
                    keys = sorted(full)
                    c = cosines(np.stack([draft[k] for k in keys]), np.stack([full[k] for k in keys]))
                    agree[f"clipkit f32 --jpeg-draft ({what})"] = {
                        "vs": "clipkit f32 (full decode)", "mean": float(c.mean()), "min": float(c.min()),
                        "n": len(c)}
            elif ck_f32 is not None:
                c = cosines(got, ck_f32)
                agree[label + " vs clipkit f32"] = {"vs": "clipkit f32", "mean": float(c.mean()),
                                                    "min": float(c.min()), "n": len(c)}
    for k, v in agree.items():
        log(f"{name} agreement {k}: {v}")

    # ---- warm-up of the in-process engines -------------------------------------------
    for e, fn in image_fns.items():
        for b in batches:
            timed_calls(lambda: fn(b), args.warmup)
    for fn in text_fns.values():
        timed_calls(fn, args.warmup)

    samples: list[Sample] = results["samples"]
    # clipkit runs (image + text at one batch per process) are shared between sections.
    ck_runs: dict[tuple, dict] = {}

    def clipkit_run(b: int, prec: str, rep: int) -> dict | None:
        key = (b, prec, rep)
        if key in ck_runs:
            return ck_runs[key]
        if prec in ck.unsupported:
            return None
        with CpuMeter() as m:
            try:
                r = ck.bench(model_dir, b, args.iters, prec)
            except Unsupported as e:
                ck.unsupported[prec] = f"not supported: {e}"
                log(f"clipkit --precision {prec}: not supported ({e})")
                return None
            except Exception as e:  # noqa: BLE001 - a failing reduced-precision row must not end the run
                if prec == "f32":
                    raise
                ck.unsupported[prec] = f"failed: {str(e)[-300:]}"
                log(f"clipkit --precision {prec} failed, row skipped: {e}")
                return None
        r["_foreign"], r["_load"], r["_wall"] = m.foreign, m.load, m.wall
        ck_runs[key] = r
        return r

    def record(section, engine, b, rep, rate, times, m, extra=None):
        smp = Sample(section, name, engine, b, rep, rate, times, m.foreign, m.load, extra or {})
        samples.append(smp)
        flag = "  <-- BUSY" if m.foreign > args.busy_threshold else ""
        log(f"{name} {section:8s} b={b:<3d} rep {rep} {ENGINE_LABELS.get(engine, engine):13s} "
            f"{rate:9.2f}/s  foreign CPU {100 * m.foreign:4.1f}%{flag}")

    def rotate(xs: list, rep: int) -> list:
        k = rep % len(xs) if xs else 0
        return xs[k:] + xs[:k]

    image_engines = list(image_fns) + [("clipkit", p) for p in ck_precisions]
    text_engines = list(text_fns) + (["clipkit"] if "f32" in ck_precisions else [])
    e2e = arch in args.e2e_models
    for rep in range(args.reps):
        for b in batches:
            for e in rotate(image_engines, rep):
                if isinstance(e, tuple):  # clipkit at some precision
                    prec = e[1]
                    r = clipkit_run(b, prec, rep)
                    if r is None:
                        continue
                    eng = "clipkit" if prec == "f32" else f"clipkit-{prec}"
                    m = _Measured(r["_foreign"], r["_load"])
                    record("image", eng, b, rep, r["images_per_sec"], [], m,
                           {"clipkit": {k: v for k, v in r.items() if not k.startswith("_")}})
                else:
                    settle()
                    with CpuMeter() as m:
                        t = timed_calls(lambda: image_fns[e](b), args.iters)
                    record("image", e, b, rep, b / statistics.median(t), t, m)
        for e in rotate(text_engines, rep):
            if e == "clipkit":
                r = clipkit_run(text_batch, "f32", rep)
                if r is not None:
                    record("text", "clipkit", text_batch, rep, r["texts_per_sec"], [],
                           _Measured(r["_foreign"], r["_load"]))
            else:
                settle()
                with CpuMeter() as m:
                    t = timed_calls(text_fns[e], args.iters)
                record("text", e, text_batch, rep, text_batch / statistics.median(t), t, m)
        if e2e:
            eb = max(batches) if large else args.e2e_batch
            for folder in ("web", "12mp"):
                files = sorted(photos[folder].glob("*.jpg"))
                variants = [x for x in ("torch", "clipkit") if x in engines]
                variants += ["clipkit-draft"] if "clipkit" in engines else []
                for e in rotate(variants, rep):
                    settle()
                    if e == "torch":
                        def e2e_torch():
                            for i in range(0, len(files), eb):
                                batch_files = [str(p) for p in files[i:i + eb]]
                                with torch.inference_mode():
                                    fam.image_features(fam.preprocess(batch_files))
                        with CpuMeter() as m:
                            t = timed_calls(e2e_torch, 1)
                        record(f"e2e-{folder}", "torch", eb, rep, len(files) / t[0], t, m, {"files": len(files)})
                    else:
                        extra = ("--jpeg-draft",) if e == "clipkit-draft" else ()
                        with CpuMeter() as m:
                            r = ck.bench(model_dir, eb, args.iters, "f32", images=photos[folder], extra=extra)
                        ee = r["end_to_end"]
                        if ee["failed"]:
                            log(f"clipkit: {ee['failed']} of {ee['files']} files failed")
                        record(f"e2e-{folder}", e, eb, rep, ee["images_per_sec"], [], m,
                               {"files": ee["files"], "failed": ee["failed"],
                                "model_only_images_per_sec": r["images_per_sec"],
                                "clipkit": {k: v for k, v in r.items() if not k.startswith("_")}})
    del fam
    if use_ort:
        del sess, text_sess


@dataclass
class _Measured:
    foreign: float
    load: float


def settle(seconds: float = 0.3) -> None:
    """Let the previous engine's spinning worker threads go to sleep before the next block."""
    time.sleep(seconds)


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def summarize(samples: list[Sample], busy: float) -> dict:
    groups: dict[tuple, list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.section, s.model, s.engine, s.batch), []).append(s)
    out = {}
    for k, ss in groups.items():
        rates = [s.rate for s in ss]
        out[k] = {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "n": len(rates),
                  "busy": any(s.foreign > busy for s in ss), "max_foreign": max(s.foreign for s in ss),
                  "extra": [s.extra for s in ss]}
    return out


def fmt_rate(st: dict | None) -> str:
    if st is None:
        return "–"
    m = st["median"]
    digits = 1 if m >= 10 else 2
    cell = f"{m:.{digits}f}"
    if st["n"] > 1:
        cell += f" ({st['min']:.{digits}f}–{st['max']:.{digits}f})"
    return cell + (" ⚠" if st["busy"] else "")


def ratio(a: dict | None, b: dict | None) -> str:
    if a is None or b is None or not b["median"]:
        return "–"
    return f"{a['median'] / b['median']:.2f}×" + (" ⚠" if a["busy"] or b["busy"] else "")


def model_order(name: str) -> int:
    """Report order: families.KEYS order of the model named `name`."""
    names = [families.family(k).name for k in families.KEYS]
    return names.index(name) if name in names else len(names)


def render(results: dict, args) -> str:
    summ = summarize(results["samples"], args.busy_threshold)
    info = results["machine"]
    unsupported = results.get("clipkit_unsupported", {})
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores ({', '.join(info['isa']) or 'no AVX2'}), "
        f"{args.threads} threads per engine; torch {info['torch']}, transformers {info['transformers']}, "
        f"onnxruntime {info['onnxruntime']}, clipkit {info['clipkit_commit']} ({info['clipkit_version']}); "
        f"{info['date']}.",
        f"Median of {args.reps} repetitions (min–max in brackets), each the median of {args.iters} calls "
        f"after warm-up; ⚠ = other processes used > {100 * args.busy_threshold:.0f}% of the CPU during a "
        "sample (not an idle machine).",
        "",
    ]

    def get(section, model, engine, batch):
        return summ.get((section, model, engine, batch))

    img_models = sorted({s.model for s in results["samples"] if s.section == "image"},
                        key=model_order)
    eng_order = [e for e in ENGINE_LABELS if any(k[0] == "image" and k[2] == e for k in summ)]
    for m in img_models:
        mi = results["models"][m]
        o = mi.get("onnx")
        setup = f"{m}: random weights (seed {mi['build']['seed']}), checkpoint built in {mi['build']['build_sec']:.0f} s"
        if o:
            setup += (f"; ONNX export ({o['vision_exporter']}, opset {o['opset']}) vision {o['vision_export_sec']:.0f} s, "
                      f"text {o['text_export_sec']:.0f} s, int8 quantisation {o['quantize_sec']:.0f} s")
        lines.append(setup + " (once; cached in --work).")
    lines += ["", "### Image tower, model only (images/s)", ""]
    half = [e for e in ("clipkit-bf16", "clipkit-f16") if e in eng_order]
    header = ["model", "batch"] + [ENGINE_LABELS[e] for e in eng_order] + \
             ["clipkit ÷ ORT f32", "clipkit ÷ PyTorch", "clipkit int8 ÷ ORT int8"] + \
             [f"{ENGINE_LABELS[e]} ÷ ORT f32" for e in half]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for m in img_models:
        for b in sorted({k[3] for k in summ if k[0] == "image" and k[1] == m}):
            row = [m, str(b)] + [fmt_rate(get("image", m, e, b)) for e in eng_order]
            ck = get("image", m, "clipkit", b)
            row += [ratio(ck, get("image", m, "ort", b)), ratio(ck, get("image", m, "torch", b)),
                    ratio(get("image", m, "clipkit-int8", b), get("image", m, "ort-int8", b))]
            row += [ratio(get("image", m, e, b), get("image", m, "ort", b)) for e in half]
            lines.append("| " + " | ".join(row) + " |")
    for prec, why in unsupported.items():
        lines.append(f"\nclipkit {prec}: {why}")

    lines += ["", "### Text tower (texts/s)", ""]
    header = ["model", "batch", "tokens (padded)", "PyTorch f32", "ORT f32", "clipkit f32", "clipkit ÷ ORT f32",
              "clipkit ÷ PyTorch"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for m in img_models:
        for b in sorted({k[3] for k in summ if k[0] == "text" and k[1] == m}):
            ck = get("text", m, "clipkit", b)
            row = [m, str(b), str(results["models"][m].get("text_tokens_padded", "?")),
                   fmt_rate(get("text", m, "torch", b)), fmt_rate(get("text", m, "ort", b)), fmt_rate(ck),
                   ratio(ck, get("text", m, "ort", b)), ratio(ck, get("text", m, "torch", b))]
            lines.append("| " + " | ".join(row) + " |")

    e2e_order = ["e2e-web", "e2e-12mp"]
    e2e_keys = sorted({(k[1], k[0], k[3]) for k in summ if k[0] in e2e_order},
                      key=lambda x: (model_order(x[0]), e2e_order.index(x[1]), x[2]))
    if e2e_keys:
        lines += ["", "### End to end from JPEG files (decode + preprocess + model, images/s)", ""]
        header = ["model", "files", "batch", "reference processor + PyTorch", "clipkit", "clipkit model only",
                  "clipkit e2e ÷ model only", "clipkit --jpeg-draft", "draft ÷ model only", "clipkit ÷ transformers"]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for m, section, b in e2e_keys:
            ck = get(section, m, "clipkit", b)
            tr = get(section, m, "torch", b)
            n = (ck or tr)["extra"][0].get("files", "?")
            what = {"e2e-web": "640×480", "e2e-12mp": "4000×3000"}[section]
            def model_only(st):
                if not st:
                    return None
                r = [x["model_only_images_per_sec"] for x in st["extra"]]
                return {"median": statistics.median(r), "min": min(r), "max": max(r), "n": len(r), "busy": st["busy"]}
            dr = get(section, m, "clipkit-draft", b)
            mo = model_only(ck)
            row = [m, f"{n} × {what}", str(b), fmt_rate(tr), fmt_rate(ck), fmt_rate(mo), ratio(ck, mo),
                   fmt_rate(dr), ratio(dr, model_only(dr)), ratio(ck, tr)]
            lines.append("| " + " | ".join(row) + " |")

    if results["agreement"]:
        lines += ["", "### Agreement (cosine of image embeddings, real photos)", ""]
        lines += ["| model | engine | compared with | mean | min | n |", "| --- | --- | --- | --- | --- | --- |"]
        for m, d in results["agreement"].items():
            for eng, v in d.items():
                if "error" in v:
                    lines.append(f"| {m} | {eng} | – | {' '.join(v['error'].split())[:120]} | | |")
                else:
                    lines.append(f"| {m} | {eng} | {v['vs']} | {v['mean']:.6f} | {v['min']:.6f} | {v['n']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    strs = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "clipkit-bench", help="cache for checkpoints, ONNX files and photos (reused across runs)")
    ap.add_argument("--clipkit", type=Path,
                    default=Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "clipkit",
                    help="clipkit binary (default $CARGO_TARGET_DIR or target/, release/clipkit)")
    ap.add_argument("--models", type=strs, help=f"any of {','.join(families.KEYS)} (default b32,l14; "
                    "--quick: b32); siglip2-b16 is SigLIP 2 B/16 at 224, h14 open_clip ViT-H/14")
    ap.add_argument("--engines", type=strs, default=["torch", "ort", "clipkit"],
                    help="torch, ort (f32 and dynamic int8), clipkit")
    ap.add_argument("--clipkit-precisions", type=strs, default=["f32", "bf16", "int8", "f16"],
                    help="clipkit rows; bf16/int8/f16 pass --precision and are skipped if the binary "
                         "(or the CPU: f16 needs AVX-512 FP16) rejects it")
    ap.add_argument("--batches", type=ints, help="image batches for ViT-B/32 and SigLIP 2 B/16 "
                    "(default 1,8,32; --quick: 1,8)")
    ap.add_argument("--large-batches", type=ints, help="image batches for ViT-L/14 and ViT-H/14 (default 8)")
    ap.add_argument("--text-batch", type=int, help="texts per batch (default: the model's largest image batch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, help="interleaved repetitions (default 5; --quick: 2)")
    ap.add_argument("--iters", type=int, help="timed calls per repetition (default 3; --quick: 1)")
    ap.add_argument("--warmup", type=int, help="warm-up calls per engine and batch (default 2; --quick: 1)")
    ap.add_argument("--e2e-models", type=strs, default=["b32"], help="models timed end to end (default b32)")
    ap.add_argument("--e2e-batch", type=int, default=32, help="batch for the end-to-end runs of the base models")
    ap.add_argument("--web-files", type=int, help="640x480 JPEGs (default 64; --quick: 8)")
    ap.add_argument("--12mp-files", dest="mp12_files", type=int, help="4000x3000 JPEGs (default 16; --quick: 2)")
    ap.add_argument("--busy-threshold", type=float, default=0.05,
                    help="share of the machine other processes may use before a sample is marked (0.05)")
    ap.add_argument("--quick", action="store_true", help="a short end-to-end check, not a benchmark")
    ap.add_argument("--smoke", action="store_true",
                    help="build the models with 2 layers per tower (checks the script's paths in minutes; "
                         "the numbers mean nothing). Implies nothing else: combine with --quick")
    ap.add_argument("--json", type=Path, help="write every raw sample and the summary here")
    a = ap.parse_args()
    q = a.quick
    a.models = a.models or (["b32"] if q else ["b32", "l14"])
    a.batches = a.batches or ([1, 8] if q else [1, 8, 32])
    a.large_batches = a.large_batches or [8]
    a.reps = a.reps or (2 if q else 5)
    a.iters = a.iters or (1 if q else 3)
    a.warmup = a.warmup or (1 if q else 2)
    a.web_files = a.web_files or (8 if q else 64)
    a.mp12_files = a.mp12_files or (2 if q else 16)
    if q:
        a.e2e_batch = min(a.e2e_batch, 8)
    for m in a.models + a.e2e_models:
        if m not in families.KEYS:
            ap.error(f"unknown model {m!r} ({', '.join(families.KEYS)})")
    for e in a.engines:
        if e not in ("torch", "ort", "clipkit"):
            ap.error(f"unknown engine {e!r} (torch, ort, clipkit)")
    a.e2e_models = [m for m in a.e2e_models if m in a.models]
    a.work = a.work.resolve()
    return a


def main() -> None:
    args = parse_args()
    if "clipkit" in args.engines and not args.clipkit.is_file():
        sys.exit(f"{args.clipkit}: no clipkit binary (cargo build --release -p clipkit-cli, or --clipkit PATH)")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    info = machine_info(args.clipkit)
    log(f"{info['cpu']}, {info['cores']} cores, ISA {info['isa']}; torch {info['torch']}, transformers "
        f"{info['transformers']}, onnxruntime {info['onnxruntime']}; clipkit {info['clipkit_commit']} "
        f"({info['clipkit_binary']}, built {info['clipkit_binary_mtime']})")
    if args.threads > NCPU:
        log(f"WARNING: --threads {args.threads} > {NCPU} cores")
    foreign = idle_probe()
    load = os.getloadavg()
    log(f"idle check: other processes use {100 * foreign:.0f}% of the CPU, load average {load[0]:.2f}")
    if foreign > args.busy_threshold:
        log("WARNING: the machine is not idle; samples taken while it is busy are marked ⚠")
    results = {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "idle_probe": {"foreign": foreign, "loadavg": load}, "models": {}, "agreement": {}, "samples": []}
    args.work.mkdir(parents=True, exist_ok=True)
    photos = ensure_photos(args.work, args.quick, args.web_files, args.mp12_files)
    ck = Clipkit(args.clipkit, args.threads)
    t0 = time.perf_counter()
    for arch in args.models:
        run_model(arch, args, ck, photos, results)
    results["clipkit_unsupported"] = ck.unsupported
    results["total_sec"] = time.perf_counter() - t0
    report = render(results, args)
    print(report)
    log(f"done in {results['total_sec'] / 60:.1f} min")
    if args.json:
        summ = summarize(results["samples"], args.busy_threshold)
        out = dict(results)
        out["samples"] = [vars(s) for s in results["samples"]]
        out["summary"] = [dict(zip(("section", "model", "engine", "batch"), k)) | {kk: vv for kk, vv in v.items()
                                                                                 if kk != "extra"}
                          for k, v in summ.items()]
        out["markdown"] = report
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
