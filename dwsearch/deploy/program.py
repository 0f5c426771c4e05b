"""Lower a model to a deployment runtime, run it, and check it against eager PyTorch.

:func:`lower` turns a model into the bytes of a program for ExecuTorch (XNNPACK delegate,
``.pte``) or ONNX Runtime (CPU execution provider, ``.onnx``), in fp32 or int8, loads the
program in its runtime and runs it on the images it is given. Every program is checked
before it is returned: fp32 outputs must match eager PyTorch within :data:`FP32_TOLERANCE`
(else :class:`DeployError`: a wrong program is never a result), and an int8 program's top-1
agreement with the eager fp32 model is measured and returned.

A block that a runtime cannot lower (an op it lacks, a branch on tensor values) is one
:class:`DeployError` line naming the layer index, the block and the runtime.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from dwsearch.costs import check_latency_memory
from dwsearch.deploy._runtimes import PRECISIONS, RUNTIMES, Runtime, Session, get_runtime
from dwsearch.errors import DeployError, DwsearchError, reason

__all__ = ["FP32_TOLERANCE", "Correctness", "Lowered", "eager_session", "lower"]

# An fp32 program may differ from eager PyTorch by this fraction of the largest eager logit
# magnitude (at least 1). Kernels sum in another order and fuse batch norm into the conv,
# so outputs differ in the last bits (about 1e-7 of the logit scale measured here); a wrong
# lowering differs by far more.
FP32_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Correctness:
    """A program's outputs against the eager fp32 model's, on the same images."""

    images: int  # images compared
    max_abs_diff: float  # largest |program logit - eager logit|, in logit units
    top1_agreement: float  # fraction (0..1) of images whose top-1 class equals eager fp32's
    logit_scale: float  # largest |eager logit|: the fp32 tolerance is relative to it

    def summary(self, precision: str) -> str:
        if precision == "fp32":
            return (f"max |program - eager| {self.max_abs_diff:.1e} on {self.images} images "
                    f"(tolerance {FP32_TOLERANCE:g} x {self.logit_scale:.3g})")
        return (f"top-1 agrees with eager fp32 on {self.top1_agreement:.1%} of {self.images} "
                f"images (max |program - eager| {self.max_abs_diff:.3g})")


@dataclass(frozen=True)
class Lowered:
    """A model lowered to a runtime: the program's bytes, how it was made, and its check."""

    runtime: str  # "executorch" or "onnxruntime"
    precision: str  # "fp32" or "int8"
    program: bytes = field(repr=False)  # the .pte or .onnx file's content
    batch_size: int  # the batch the program was exported at (ONNX programs take any batch)
    input_shape: tuple[int, ...]  # (C, H, W), without the batch
    version: str  # the runtime package's version
    calibration_images: int  # int8: training images the quantizer observed; fp32: 0
    calibration_source: str  # where those images came from, as the caller said
    seconds: float  # wall time to lower and load, in seconds
    check: Correctness

    @property
    def size_bytes(self) -> int:
        """Size of the serialized program (the file that ships), in bytes."""
        return len(self.program)

    @property
    def suffix(self) -> str:
        return get_runtime(self.runtime).suffix

    def load(self, threads: int = 1) -> Session:
        """The program loaded in its runtime, with ``threads`` intra-op threads."""
        from dwsearch.deploy.deployment import thread_counts

        (threads,) = thread_counts(threads)
        return get_runtime(self.runtime).load(self.program, threads)


def _check_images(images: object, what: str, shape: tuple[int, ...] | None) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or not len(images):
        found = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DeployError(f"{what}: expected a float tensor of images (N, C, H, W) with N >= 1, "
                          f"found {found}")
    if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
        raise DeployError(f"{what}: expected finite float images (normalised as the model "
                          f"was trained), found {images.dtype} with non-finite values"
                          if images.is_floating_point() else
                          f"{what}: expected float images, found {images.dtype}")
    if shape is not None and tuple(images.shape[1:]) != shape:
        raise DeployError(f"{what}: images of shape {tuple(images.shape[1:])}, but the model "
                          f"takes {shape}")
    return images.detach().to("cpu", torch.float32).contiguous()


def _spec_input(model: nn.Module) -> tuple[int, ...] | None:
    spec = getattr(model, "spec", None)
    shape = getattr(spec, "input_shape", None)
    return tuple(shape) if shape is not None else None


def eager_session(model: nn.Module, threads: int) -> Session:
    """The model itself as a session (eval mode, ``torch.inference_mode``, fp32 on the CPU):
    the reference every runtime is compared with."""
    model = copy.deepcopy(model).cpu().eval()

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out: torch.Tensor = model(images)
        return out

    return Session(run, lambda: torch.set_num_threads(threads), threads)


def _in_batches(run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                batch_size: int) -> torch.Tensor:
    """``run`` over ``images`` in batches of exactly ``batch_size`` (ExecuTorch programs have
    a static batch): the last batch is filled up with copies of its first image, whose
    outputs are dropped."""
    outs = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        real = len(chunk)
        if real < batch_size:
            chunk = torch.cat([chunk, chunk[:1].expand(batch_size - real, *chunk.shape[1:])])
        outs.append(run(chunk.contiguous())[:real].detach().float())
    return torch.cat(outs)


def lower(
    model: nn.Module,
    runtime: str,
    precision: str = "fp32",
    *,
    images: torch.Tensor,
    calibration: torch.Tensor | None = None,
    calibration_source: str = "given",
    batch_size: int = 1,
    quantized: bool = False,
) -> Lowered:
    """Lower ``model`` to ``runtime`` ("executorch" or "onnxruntime") in ``precision``
    ("fp32" or "int8"), load the program and check it on ``images``.

    ``images`` (N, C, H, W), normalised as the model expects: fp32 programs must match the
    eager model on them within :data:`FP32_TOLERANCE` of the logit scale (else
    :class:`DeployError`); int8 programs get their top-1 agreement with eager fp32 measured.
    ``calibration`` (M, C, H, W): int8 only, the images the quantizer observes to choose
    activation ranges. They must be **training** images (a fixed number of them), never
    validation or test images, or the accuracy measured afterwards on those is not held
    out; ``calibration_source`` records where they came from ("random" for an untrained
    model). ``batch_size``: the batch the program is exported for (ExecuTorch programs take
    only that batch; ONNX programs any). The model is not changed (a copy is lowered).
    ``quantized``: the model is int8 already (``convert_pt2e``'s output, as after
    quantization-aware training): it is lowered as it is, ExecuTorch int8 only, without
    calibration, and its top-1 agreement is with itself in eager PyTorch.

    Raises :class:`RuntimeNotInstalledError` when the runtime's packages are missing and
    :class:`DeployError` naming the layer, block and runtime when a block cannot be lowered.
    """
    if runtime not in RUNTIMES:
        raise DeployError(f"runtime {runtime!r}: unknown; allowed: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise DeployError(f"precision {precision!r}: unknown; allowed: {', '.join(PRECISIONS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DeployError(f"batch_size: expected an integer >= 1, found {batch_size!r}")
    if not isinstance(model, nn.Module):
        raise DeployError(f"model: expected a torch.nn.Module, found {type(model).__name__}")
    images = _check_images(images, "images", _spec_input(model))
    shape = tuple(images.shape[1:])
    int8 = precision == "int8"
    if quantized:
        if (runtime, precision) != ("executorch", "int8"):
            raise DeployError(f"quantized: a model quantized already is lowered to executorch "
                              f"in int8, found {runtime} in {precision}")
        calibration = None
    elif int8:
        if calibration is None:
            raise DeployError("calibration: int8 needs calibration images (training images, "
                              "N, C, H, W)")
        calibration = _check_images(calibration, "calibration", shape)
    # A batch that would not fit is refused before anything is exported or allocated.
    check_latency_memory(model, shape, batch_size)
    rt = get_runtime(runtime)
    rt.require()
    # A copy: the quantizer folds batch norm in place. In torch's default memory layout: a
    # model trained channels_last (dwsearch's default) fails XNNPACK's layout pass.
    model = copy.deepcopy(model).cpu()
    if not quantized:
        model = model.to(memory_format=torch.contiguous_format)
    model = _eval(model, quantized)
    sample = torch.zeros(batch_size, *shape)
    start = time.perf_counter()
    try:
        # A quantized model's graph holds its int8 ops already: exported as it is.
        program = rt.lower(model, sample, int8 and not quantized, calibration)
        session = rt.load(program, threads=1)
        outputs = _in_batches(session.run, images, batch_size)
    except DwsearchError:
        raise
    except Exception as err:
        # torch.export prints the graph it gave up on; the one line raised says what matters.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            located = _locate(err, model, rt, precision, sample, calibration)
        raise located from err
    seconds = time.perf_counter() - start
    with torch.inference_mode():
        reference = _in_batches(model, images, max(batch_size, 64))
    scale = max(1.0, float(reference.abs().max()))
    check = Correctness(
        images=len(images),
        max_abs_diff=float((outputs - reference).abs().max()),
        top1_agreement=float((outputs.argmax(1) == reference.argmax(1)).float().mean()),
        logit_scale=scale,
    )
    if not int8 and not check.max_abs_diff <= FP32_TOLERANCE * scale:
        raise DeployError(
            f"{_name(model)}: runtime {runtime!r} (fp32) computes other outputs than eager "
            f"PyTorch (max |difference| {check.max_abs_diff:.3g}, tolerance "
            f"{FP32_TOLERANCE * scale:.3g}); the program is not used")
    return Lowered(
        runtime=runtime, precision=precision, program=program, batch_size=batch_size,
        input_shape=shape, version=rt.version,
        calibration_images=len(calibration) if int8 and calibration is not None else 0,
        calibration_source=calibration_source if int8 else "", seconds=seconds, check=check,
    )


def _eval(model: nn.Module, exported: bool) -> nn.Module:
    """Eval mode; an exported (PT2E) graph switches its batch norm and dropout through
    torchao, as ``.eval()`` is refused on exported models."""
    if not exported:
        return model.eval()
    from torchao.quantization.pt2e import move_exported_model_to_eval

    result: nn.Module = move_exported_model_to_eval(model)
    return result


# -- locating what cannot be lowered ---------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OP = re.compile(r"\b(?:aten|prims)(?:\.|::)([A-Za-z_][A-Za-z0-9_]*)")


def _name(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    name = getattr(spec, "name", None)
    return f"model {name}" if name else f"model ({type(model).__name__})"


def _short_reason(err: BaseException) -> str:
    """The cause in one line: ONNX's exporter wraps it under "Exception summary"; a branch
    on tensor values is said as such."""
    text = _ANSI.sub("", str(err))
    if "data-dependent" in text or "DataDependent" in type(err).__name__:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        first = first.split(" (unhinted", 1)[0]
        return f"its forward branches on tensor values (torch.export: {first[:120]})"
    if "## Exception summary" in text:
        after = text.split("## Exception summary", 1)[1].strip().splitlines()
        if after:
            line = re.sub(r"^<class '[\w.]+\.(\w+)'>: ", r"\1: ", after[0].strip())
            return line.split(". Failure message", 1)[0][:200]
    # ExecuTorch's verifier appends a link and advice to the sentence that matters.
    text = re.sub(r"\s*\(https?://[^)]*\)", "", text).split('"', 1)[0].split(" There are", 1)[0]
    return reason(type(err)(text) if text.strip() else err, 200).replace("torch._ops.", "")


def _layers(model: nn.Module, shape: tuple[int, ...]
            ) -> list[tuple[int, str, nn.Module, tuple[int, ...]]]:
    """(index, block, module, input shape) of each top-level layer of a built network;
    empty for a plain module (then no layer can be named)."""
    spec = getattr(model, "spec", None)
    shapes = getattr(model, "shapes", ())
    if spec is None or not shapes or len(shapes) != len(model._modules):
        return []
    children = list(model.children())
    return [(s.index, s.block, children[s.index], tuple(s.in_shape)) for s in shapes
            if s.index < len(children)]


def _op_names(err: BaseException) -> set[str]:
    """Operator names an error mentions, itself and its causes (underscores dropped:
    ``prims.erf_inv`` comes from ``aten.erfinv``)."""
    found: set[str] = set()
    seen: BaseException | None = err
    while seen is not None:
        found.update(m.replace("_", "") for m in _OP.findall(_ANSI.sub("", str(seen))))
        seen = seen.__cause__ or seen.__context__
    return found - {"", "default"}


def _layer_of_op(model: nn.Module, sample: torch.Tensor, names: set[str]) -> int | None:
    """The top-level layer whose exported graph holds one of the operators ``names``, read
    from the module path torch.export records on every node; None when export fails or no
    node matches."""
    if not names:
        return None
    try:
        program = torch.export.export(model, (sample,))
        graphs = [program.graph]
        # The decomposed graph adds the names of what ops become; the first may do alone.
        with contextlib.suppress(Exception):
            graphs.append(program.run_decompositions().graph)
    except Exception:
        return None
    for graph in graphs:
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            op = str(getattr(node.target, "__name__", node.target)).split(".")[0]
            if op.replace("_", "") not in names:
                continue
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            paths = [path for path, _ in stack if path]
            if paths and paths[0].split(".")[0].isdigit():
                return int(paths[0].split(".")[0])
    return None


def _inputs_of(layers: Sequence[tuple[int, str, nn.Module, tuple[int, ...]]],
               images: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Each layer's input for the calibration images (eager, layer by layer)."""
    if images is None:
        return [None] * len(layers)
    out: list[torch.Tensor | None] = []
    x = images
    with torch.inference_mode():
        for _, _, module, _ in layers:
            out.append(x)
            x = module(x)
    return out


def _first_failing(layers: Sequence[tuple[int, str, nn.Module, tuple[int, ...]]],
                   probe: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], None],
                   batch: int, calibration: torch.Tensor | None
                   ) -> tuple[int, BaseException] | None:
    """The first layer that fails ``probe`` on its own, and its error."""
    for (index, _, module, shape), calib in zip(
            layers, _inputs_of(layers, calibration), strict=True):
        try:
            probe(module, torch.zeros(batch, *shape), calib)
        except Exception as err:
            return index, err
    return None


def _locate(err: BaseException, model: nn.Module, rt: Runtime, precision: str,
            sample: torch.Tensor, calibration: torch.Tensor | None) -> DeployError:
    """A :class:`DeployError` naming the layer that ``rt`` cannot lower.

    Where torch.export itself fails (a branch on tensor values), each layer is exported
    alone until one fails. Otherwise the operator the error names is looked up in the
    exported graph, whose nodes record the module they came from; failing that, each layer
    is lowered and run alone until one fails. Only this error path pays for the search.
    """
    layers = _layers(model, tuple(sample.shape[1:]))
    what = f"runtime {rt.name!r} ({precision}) cannot lower it"
    int8 = precision == "int8"
    found: tuple[int, BaseException] | None = None
    if layers:
        try:
            torch.export.export(model, (sample,))
            exported = True
        except Exception:
            exported = False
        if not exported:
            def export_only(module: nn.Module, x: torch.Tensor, _: torch.Tensor | None
                            ) -> None:
                torch.export.export(module, (x,))

            found = _first_failing(layers, export_only, len(sample), None)
        else:
            index = _layer_of_op(model, sample, _op_names(err))
            if index is not None:
                found = (index, err)
            else:
                def probe(module: nn.Module, x: torch.Tensor, calib: torch.Tensor | None
                          ) -> None:
                    program = rt.lower(module, x, int8, calib)
                    rt.load(program, threads=1).run(x)

                found = _first_failing(layers, probe, len(sample), calibration)
    if found is None:
        return DeployError(f"{_name(model)}: {what}: {_short_reason(err).rstrip('.')}")
    index, cause = found
    block = next(b for i, b, _, _ in layers if i == index)
    return DeployError(f"layers[{index}] ({block}): {what}: {_short_reason(cause).rstrip('.')}; "
                       f"use blocks the runtime supports, or leave {rt.name} out")
