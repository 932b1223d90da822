"""The model families compare.py times: how each one's random-weight, full-size checkpoint is
built (in the directory layout clipkit loads), and how PyTorch and ONNX Runtime run its towers.

Why a module of its own: compare.py's protocol (interleaved repetitions, the CPU meter, the
report) is the same for every family; what differs is the reference library, the checkpoint
files, the text inputs (CLIP pads to the longest prompt with a mask, SigLIP to a fixed 64 with
no mask, open_clip to 77) and the preprocessing. Each `Family` answers those questions, and
compare.py asks them.

Families (the `--models` keys):
  b32, l14     OpenAI CLIP ViT-B/32, ViT-L/14 (transformers CLIPModel), as before.
  siglip2-b16  google/siglip2-base-patch16-224's shapes (transformers SiglipModel): ViT-B/16 at
               224 px with the MAP head, a 12-layer text tower over a 256,000-token vocabulary
               (Gemma's), gelu_pytorch_tanh, LayerNorm eps 1e-6, text padded to 64 tokens.
  h14          open_clip ViT-H-14 (laion/CLIP-ViT-H-14-laion2B-s32B-b79K's shapes), in
               open_clip's hub layout (open_clip_config.json + open_clip_model.safetensors).
               Large (986M parameters): built and timed only when asked for.

Weights are random (speed does not depend on them) but not degenerate: every Linear and
Conv2d is redrawn with std 1/sqrt(fan_in), as make_fixtures.py does for CLIP, so that
different images give different embeddings and the agreement cosines mean something.
`smoke=True` builds every tower with 2 layers: a check that the script's paths work, in
seconds, whose numbers mean nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "fixtures"))

import make_fixtures as mf  # noqa: E402  (random-weight CLIP builder shared with the fixtures)

MODEL_SEED = mf.SEED + 1000  # the seed make_fixtures.py --big uses


def log(*a) -> None:
    print("[compare]", *a, file=sys.stderr, flush=True)


def redraw(model: torch.nn.Module, seed: int) -> None:
    """Linear and Conv2d weights ~ N(0, 1/fan_in) (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                w = mod.weight
                fan_in = w[0].numel()
                w.copy_(torch.randn(w.shape, generator=gen) / fan_in ** 0.5)


class Family:
    """One model as compare.py times it. Subclasses set the class attributes and implement the
    methods; `load` must run before the tower methods."""

    key: str  # the --models value
    name: str  # as tables show it
    image_size: int
    text_input_names: list[str]  # the text tower's inputs, in ONNX order
    text_dynamic_seq: bool  # whether the text length varies (else fixed by the family)

    def __init__(self, smoke: bool = False):
        self.smoke = smoke

    # -- the checkpoint ---------------------------------------------------------------
    def dir_name(self) -> str:
        return self.key + ("-smoke" if self.smoke else "")

    def ensure(self, work: Path) -> Path:
        """The checkpoint directory under `work`, built once (a stamp file marks it done)."""
        out = work / "models" / self.dir_name()
        stamp = out / "bench-model.json"
        if stamp.is_file():
            return out
        log(f"building random-weight {self.name}{' (smoke: 2 layers)' if self.smoke else ''} -> {out}")
        t0 = time.perf_counter()
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        self.build(out)
        stamp.write_text(json.dumps({"family": self.key, "seed": MODEL_SEED, "smoke": self.smoke,
                                     "transformers": transformers.__version__, "torch": torch.__version__,
                                     "build_sec": time.perf_counter() - t0}) + "\n")
        log(f"  built in {time.perf_counter() - t0:.0f} s")
        return out

    def build(self, out: Path) -> None:
        raise NotImplementedError

    # -- running it -------------------------------------------------------------------
    def load(self, model_dir: Path) -> None:
        raise NotImplementedError

    def describe(self) -> dict:
        """What the report records about the loaded model."""
        return {}

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def text_inputs(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The text tower's inputs for `texts` as int64 arrays, laid out as the family's
        reference does it."""
        raise NotImplementedError

    def text_features(self, inputs: dict[str, np.ndarray]) -> torch.Tensor:
        raise NotImplementedError

    def preprocess(self, paths: list[str]) -> torch.Tensor:
        """pixel_values of image files, by the family's reference preprocessing."""
        raise NotImplementedError

    def vision_module(self) -> torch.nn.Module:
        fam = self

        class Vision(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = fam.torch_model()

            def forward(self, pixel_values):
                return fam.image_features(pixel_values)

        return Vision().eval()

    def text_module(self) -> torch.nn.Module:
        """The text tower as a module whose forward takes the inputs by their names (the
        exporter's dynamic shapes are keyed by them)."""
        fam = self

        class Text(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = fam.torch_model()

        if self.text_input_names == ["input_ids", "attention_mask"]:
            def forward(self, input_ids, attention_mask):
                return fam.text_features_tensors({"input_ids": input_ids, "attention_mask": attention_mask})
        elif self.text_input_names == ["input_ids"]:
            def forward(self, input_ids):
                return fam.text_features_tensors({"input_ids": input_ids})
        elif self.text_input_names == ["text"]:
            def forward(self, text):
                return fam.text_features_tensors({"text": text})
        else:
            raise ValueError(f"no text module for inputs {self.text_input_names}")
        Text.forward = forward
        return Text().eval()

    def torch_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def text_features_tensors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class ClipFamily(Family):
    """OpenAI CLIP in transformers' format, built as make_fixtures.py --big builds it."""

    text_input_names = ["input_ids", "attention_mask"]
    text_dynamic_seq = True
    _names = {"b32": "ViT-B/32", "l14": "ViT-L/14"}
    _dirs = {"b32": "vit-b-32", "l14": "vit-l-14"}

    def __init__(self, key: str, smoke: bool = False):
        super().__init__(smoke)
        self.key, self.name = key, self._names[key]
        self.image_size = mf.BIG_MODELS[key]["image_size"]

    def dir_name(self) -> str:
        return self._dirs[self.key] + ("-smoke" if self.smoke else "")

    def build(self, out: Path) -> None:
        spec = mf.BIG_MODELS[self.key]
        tok_dir = mf.FIX / "tokenizer"
        if not (tok_dir / "tokenizer.json").is_file():
            sys.exit(f"{tok_dir} missing (the committed fixtures are needed for the tokenizer files)")
        text, vision = dict(spec["text"]), dict(spec["vision"])
        if self.smoke:
            text["num_hidden_layers"] = vision["num_hidden_layers"] = 2
        model = mf.build_model(text, vision, spec["projection_dim"], MODEL_SEED, None)
        model.save_pretrained(str(out), max_shard_size="100GB")
        del model
        mf.check_saved_keys(out)
        s = spec["image_size"]
        (out / "preprocessor_config.json").write_text(
            json.dumps(mf.preprocessor_config(s, s, legacy=True), indent=2) + "\n")
        mf.link_or_copy_tokenizer(out, tok_dir, symlink=False)

    def load(self, model_dir: Path) -> None:
        from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer

        self.model = CLIPModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.tok = CLIPTokenizer.from_pretrained(str(model_dir))
        self.proc = CLIPProcessor.from_pretrained(str(model_dir))

    def describe(self) -> dict:
        return {"attn_implementation": self.model.config._attn_implementation,
                "image_processor": type(self.proc.image_processor).__name__}

    def torch_model(self):
        return self.model

    def image_features(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    def text_inputs(self, texts):
        # Padded to the longest prompt of the batch (not to 77), as clipkit does.
        enc = self.tok(texts, padding="longest", return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64),
                "attention_mask": enc["attention_mask"].astype(np.int64)}

    def text_features_tensors(self, inputs):
        return self.model.get_text_features(**inputs).pooler_output

    def text_features(self, inputs):
        return self.text_features_tensors({k: torch.from_numpy(v) for k, v in inputs.items()})

    def preprocess(self, paths):
        return self.proc(images=paths, return_tensors="pt").pixel_values


class Siglip2Family(Family):
    """google/siglip2-base-patch16-224's shapes in transformers' SiglipModel format.

    The checkpoint's tokenizer: a Gemma-style one from the committed fixtures when there is one
    (a directory under fixtures/ whose tokenizer_config.json names a Gemma tokenizer, so that
    clipkit reads it as its tests do), else a small byte-fallback BPE trained here on the
    benchmark prompts, with Gemma's special tokens (<pad> 0, <eos> 1, <bos> 2, <unk> 3) and
    <eos> appended. The benchmark only needs token ids; the model's vocabulary stays 256,000.
    """

    key, name = "siglip2-b16", "SigLIP 2 B/16"
    image_size = 224
    text_input_names = ["input_ids"]
    text_dynamic_seq = False
    max_length = 64
    vocab_size = 256_000

    def config(self):
        from transformers import SiglipConfig

        layers = 2 if self.smoke else 12
        tower = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=layers, num_attention_heads=12,
                     hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, attention_dropout=0.0)
        return SiglipConfig(
            text_config={**tower, "vocab_size": self.vocab_size, "max_position_embeddings": self.max_length,
                         "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1},
            vision_config={**tower, "image_size": self.image_size, "patch_size": 16, "num_channels": 3},
        )

    def build(self, out: Path) -> None:
        from transformers import SiglipModel

        torch.manual_seed(MODEL_SEED)
        model = SiglipModel(self.config()).eval()
        redraw(model, MODEL_SEED + 1)
        with torch.no_grad():
            # A SigLIP-like head: exp(scale) ~ 117, bias ~ -12 (the published checkpoints' range).
            model.logit_scale.fill_(float(np.log(117.0)))
            model.logit_bias.fill_(-12.0)
        model.save_pretrained(str(out), max_shard_size="100GB")
        del model
        s = self.image_size
        (out / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "SiglipImageProcessor",
            "processor_class": "SiglipProcessor",
            "do_resize": True, "size": {"height": s, "width": s}, "resample": 3,
            "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        }, indent=2) + "\n")
        self.write_tokenizer(out)

    @staticmethod
    def fixture_tokenizer() -> Path | None:
        for cfg in sorted(mf.FIX.glob("**/tokenizer_config.json")):
            try:
                cls = json.loads(cfg.read_text()).get("tokenizer_class", "")
            except (OSError, ValueError):
                continue
            if "Gemma" in cls and (cfg.parent / "tokenizer.json").is_file():
                return cfg.parent
        return None

    def write_tokenizer(self, out: Path) -> None:
        found = self.fixture_tokenizer()
        if found is not None:
            log(f"  tokenizer: Gemma-style fixture {found.relative_to(REPO)}")
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                if (found / name).is_file():
                    shutil.copyfile(found / name, out / name)
            return
        log("  tokenizer: a small byte-fallback BPE trained on the benchmark prompts (no Gemma fixture found)")
        from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

        specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)],
                                      show_progress=False)
        words = ("a photo of a dog on beach at sunset close-up small orange cat blurry red sports car an "
                 "aerial photograph city night black and white old man painting sailing boat in storm cup "
                 "coffee table cartoon drawing happy green dragon").split()
        corpus = [" ".join(words[i:i + 6]) for i in range(len(words))] * 4
        tok.train_from_iterator(corpus, trainer)
        tok.post_processor = processors.TemplateProcessing(single="$A <eos>", pair="$A <eos> $B <eos>",
                                                           special_tokens=[("<eos>", 1)])
        tok.save(str(out / "tokenizer.json"))
        (out / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "GemmaTokenizer", "model_max_length": self.max_length, "padding_side": "right",
            "add_bos_token": False, "add_eos_token": True, "pad_token": "<pad>", "eos_token": "<eos>",
            "bos_token": "<bos>", "unk_token": "<unk>"}, indent=2) + "\n")
        (out / "special_tokens_map.json").write_text(json.dumps({
            "pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}, indent=2) + "\n")

    def load(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer
        from transformers import SiglipModel
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        self.model = SiglipModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        pp = json.loads((model_dir / "preprocessor_config.json").read_text())
        self.proc = SiglipImageProcessorPil(size=pp["size"], resample=pp["resample"],
                                            image_mean=pp["image_mean"], image_std=pp["image_std"])

    def describe(self) -> dict:
        return {"attn_implementation": self.model.config._attn_implementation,
                "image_processor": type(self.proc).__name__, "text_padding": f"max_length {self.max_length}, no mask"}

    def torch_model(self):
        return self.model

    def image_features(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    def text_inputs(self, texts):
        # SigLIP reads every text padded to max_length with no attention mask, as it was trained.
        ids = np.zeros((len(texts), self.max_length), dtype=np.int64)  # <pad> is 0
        for i, enc in enumerate(self.tok.encode_batch(texts)):
            row = enc.ids[: self.max_length]
            ids[i, : len(row)] = row
        return {"input_ids": ids}

    def text_features_tensors(self, inputs):
        return self.model.get_text_features(input_ids=inputs["input_ids"]).pooler_output

    def text_features(self, inputs):
        return self.text_features_tensors({k: torch.from_numpy(v) for k, v in inputs.items()})

    def preprocess(self, paths):
        from PIL import Image

        images = [Image.open(p).convert("RGB") for p in paths]
        return self.proc(images=images, return_tensors="pt").pixel_values


class OpenClipH14Family(Family):
    """open_clip ViT-H-14 (the laion2B-s32B-b79K checkpoint's shapes) in open_clip's hub layout:
    open_clip_config.json (model_cfg + preprocess_cfg) and open_clip_model.safetensors. No
    tokenizer files: open_clip (and clipkit) use the CLIP BPE open_clip bundles."""

    key, name = "h14", "open_clip ViT-H/14"
    image_size = 224
    text_input_names = ["text"]
    text_dynamic_seq = False
    arch = "ViT-H-14"

    def model_cfg(self) -> dict:
        import open_clip

        cfg = json.loads(json.dumps(open_clip.get_model_config(self.arch)))
        if self.smoke:
            cfg["vision_cfg"]["layers"] = cfg["text_cfg"]["layers"] = 2
        return cfg

    def build(self, out: Path) -> None:
        import open_clip
        import safetensors.torch
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        cfg = self.model_cfg()
        torch.manual_seed(MODEL_SEED)
        model = open_clip.model.CLIP(**cfg).eval()
        redraw(model, MODEL_SEED + 1)
        safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                    str(out / "open_clip_model.safetensors"))
        (out / "open_clip_config.json").write_text(json.dumps({
            "model_cfg": cfg,
            "preprocess_cfg": {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD),
                               "interpolation": "bicubic", "resize_mode": "shortest"},
        }, indent=2) + "\n")

    def load(self, model_dir: Path) -> None:
        import open_clip
        import safetensors.torch

        cfg = json.loads((model_dir / "open_clip_config.json").read_text())
        self.model = open_clip.model.CLIP(**cfg["model_cfg"]).eval()
        self.model.load_state_dict(safetensors.torch.load_file(str(model_dir / "open_clip_model.safetensors")))
        self.tok = open_clip.get_tokenizer(self.arch)
        pp = cfg["preprocess_cfg"]
        self.proc = open_clip.image_transform(self.image_size, is_train=False, mean=pp["mean"], std=pp["std"],
                                              interpolation=pp["interpolation"], resize_mode=pp["resize_mode"])

    def describe(self) -> dict:
        return {"library": "open_clip", "text_padding": "context_length 77"}

    def torch_model(self):
        return self.model

    def image_features(self, pixel_values):
        return self.model.encode_image(pixel_values)

    def text_inputs(self, texts):
        return {"text": self.tok(texts).numpy().astype(np.int64)}

    def text_features_tensors(self, inputs):
        return self.model.encode_text(inputs["text"])

    def text_features(self, inputs):
        return self.text_features_tensors({k: torch.from_numpy(v) for k, v in inputs.items()})

    def preprocess(self, paths):
        from PIL import Image

        return torch.stack([self.proc(Image.open(p)) for p in paths])


# The --models keys, in report order.
KEYS = ["b32", "l14", "siglip2-b16", "h14"]


def family(key: str, smoke: bool = False) -> Family:
    if key in ("b32", "l14"):
        return ClipFamily(key, smoke)
    if key == "siglip2-b16":
        return Siglip2Family(smoke)
    if key == "h14":
        return OpenClipH14Family(smoke)
    raise KeyError(key)
