"""The two runtimes a model is lowered to, behind one small interface.

Each runtime turns an eval-mode model into the bytes of a program file (``.pte`` or
``.onnx``) and loads such bytes into something that runs a batch. The runtimes' packages are
imported here, inside the functions, so that ``dwsearch.deploy`` imports without them and a
missing one is one line naming the extra that installs it.

Nothing is written to disk but for ONNX Runtime's quantizer, which reads and writes model
files: it works inside a :class:`tempfile.TemporaryDirectory`, removed when it returns or
fails. Program bytes stay in memory.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dwsearch.errors import RuntimeNotInstalledError

__all__ = ["PRECISIONS", "RUNTIMES", "Runtime", "Session", "get_runtime", "native_stderr",
           "xnnpack_quantizer"]

RUNTIMES = ("executorch", "onnxruntime")
PRECISIONS = ("fp32", "int8")
INSTALL_HINT = "pip install 'dwsearch[deploy]'"
# ExecuTorch is installed without its declared dependencies (see pyproject.toml's deploy).
EXECUTORCH_HINT = "pip install --no-deps executorch==1.5.1"
# The ONNX opset written: the one the dynamo exporter targets by default in torch 2.14 and
# that ONNX Runtime's QDQ quantizer supports (per-channel DequantizeLinear needs >= 13).
ONNX_OPSET = 18
# Calibration batches of at most this many images: observers see every image either way;
# larger batches only cost memory.
CALIBRATION_BATCH = 32



@dataclass(frozen=True)
class Session:
    """A program loaded in its runtime: ``run`` takes a batch (N, C, H, W) and returns its
    logits (N, classes); ``prepare`` sets what the runtime keeps per process (ExecuTorch's
    threadpool) before the session is timed or run beside others."""

    run: Callable[[torch.Tensor], torch.Tensor]
    prepare: Callable[[], None]
    threads: int


@contextlib.contextmanager
def native_stderr() -> Iterator[io.BytesIO]:
    """Collect what native code writes to file descriptor 2 while the block runs.

    ExecuTorch's C++ runtime logs every threadpool reset and its CPU probing there, which
    would land between the lines of a table. Collected, not dropped: the caller can quote it
    when a load fails. The bytes go through an unnamed temporary file (deleted on close).
    """
    collected = io.BytesIO()
    try:
        fd = 2
        saved = os.dup(fd)
    except OSError:  # no stderr to redirect (a daemon): nothing to collect
        yield collected
        return
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), fd)
            yield collected
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            collected.write(sink.read())


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _missing(runtime: str, err: ImportError) -> RuntimeNotInstalledError:
    missing = err.name or str(err)
    hint = INSTALL_HINT
    if runtime == "executorch":
        hint += f" and {EXECUTORCH_HINT}"
    return RuntimeNotInstalledError(
        f"runtime {runtime!r}: not installed (cannot import {missing}); {hint}")


# What lowering and running import, per runtime: the smallest set that works, which is what
# the ``deploy`` extra installs (see pyproject.toml).
_NEEDS = {
    "executorch": ("executorch.exir", "executorch.runtime",
                   "executorch.extension.pybindings.portable_lib",
                   "executorch.backends.xnnpack.partition.xnnpack_partitioner",
                   "executorch.backends.xnnpack.quantizer.xnnpack_quantizer",
                   "torchao.quantization.pt2e.quantize_pt2e"),
    "onnxruntime": ("onnx", "onnxscript", "onnxruntime", "onnxruntime.quantization"),
}


@dataclass(frozen=True)
class Runtime:
    """One deployment runtime: how a model becomes program bytes and how bytes run."""

    name: str  # "executorch" or "onnxruntime"
    suffix: str  # of the program file: ".pte" or ".onnx"
    package: str  # the distribution whose version the results record
    label: str  # for tables: "ExecuTorch (XNNPACK)"

    def require(self) -> None:
        """Import what lowering and running need; raise :class:`RuntimeNotInstalledError`
        naming the extra when a package is missing."""
        try:
            # ExecuTorch's native library logs its CPU probing when it loads, and its
            # pybindings warn that their Python API is experimental (known: see README).
            # torchao registers an Enum with torch's pytree on import, which torch 2.14 logs
            # as a deprecation (a W line in the middle of a command's output).
            pytree = logging.getLogger("torch.utils._pytree")
            level = pytree.level
            pytree.setLevel(logging.ERROR)
            try:
                with native_stderr(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for module in _NEEDS[self.name]:
                        importlib.import_module(module)
            finally:
                pytree.setLevel(level)
        except ImportError as err:
            raise _missing(self.name, err) from err

    @property
    def version(self) -> str:
        return _version(self.package)

    def lower(self, model: nn.Module, sample: torch.Tensor, int8: bool,
              calibration: torch.Tensor | None) -> bytes:
        """The program bytes of ``model`` (eval mode) for inputs shaped like ``sample``
        (batch included); ``int8`` quantizes with ``calibration`` images. Errors from torch
        and the runtime pass through: :mod:`dwsearch.deploy.program` locates them."""
        # torch.export prints the graph it gave up on, and the exporters their progress:
        # the error raised says what matters, in one line.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if self.name == "executorch":
                return _lower_executorch(model, sample, calibration if int8 else None)
            return _lower_onnx(model, sample, calibration if int8 else None)

    def load(self, program: bytes, threads: int) -> Session:
        """A function running ``program`` with ``threads`` intra-op threads."""
        if self.name == "executorch":
            return _load_executorch(program, threads)
        return _load_onnx(program, threads)


_RUNTIMES = {
    "executorch": Runtime("executorch", ".pte", "executorch", "ExecuTorch (XNNPACK)"),
    "onnxruntime": Runtime("onnxruntime", ".onnx", "onnxruntime", "ONNX Runtime (CPU)"),
}


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``; a :class:`DeployError` lists the known ones."""
    from dwsearch.errors import DeployError

    try:
        return _RUNTIMES[name]
    except (KeyError, TypeError):
        raise DeployError(f"runtime {name!r}: unknown; allowed: {', '.join(RUNTIMES)}") from None


# -- ExecuTorch ------------------------------------------------------------------------------


def _lower_executorch(model: nn.Module, sample: torch.Tensor,
                      calibration: torch.Tensor | None) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        if calibration is None:
            program = torch.export.export(model, (sample,))
        else:
            program = torch.export.export(_pt2e_int8(model, sample, calibration), (sample,))
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        return bytes(edge.to_executorch().buffer)


def xnnpack_quantizer(*, qat: bool = False) -> Any:
    """The int8 scheme XNNPACK runs, the one every int8 program here is made with: int8
    activations (per tensor, affine) and int8 weights (per output channel, symmetric).
    ``qat``: the same scheme with fake quantization, for quantization-aware training
    (``prepare_qat_pt2e``)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))
    return quantizer


def _pt2e_int8(model: nn.Module, sample: torch.Tensor, calibration: torch.Tensor
               ) -> torch.fx.GraphModule:
    """PT2E static quantization as XNNPACK runs it (:func:`xnnpack_quantizer`), with
    histogram observers on the calibration images."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = xnnpack_quantizer()
    # Exported with a free batch dimension so calibration runs in batches of any size;
    # the converted model is exported again at the program's own (static) batch. Batch 2
    # as the example: torch.export specialises a dimension of size 1.
    example = sample[:1].expand(2, *sample.shape[1:]).contiguous()
    graph = torch.export.export(model, (example,),
                                dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
    prepared = prepare_pt2e(graph, quantizer)
    for start in range(0, len(calibration), CALIBRATION_BATCH):
        prepared(calibration[start:start + CALIBRATION_BATCH])
    converted: torch.fx.GraphModule = convert_pt2e(prepared)
    return converted


# ExecuTorch has one threadpool per process, and a loaded XNNPACK program keeps a pointer to
# the pool it was loaded with: resetting the pool (to change the thread count) leaves every
# program loaded before it pointing at freed memory, and running one corrupts the heap. So
# each reset is counted, and a session loaded before the latest reset loads itself again.
_POOL_RESETS = [0]


@functools.cache
def _portable_lib() -> Any:
    # The threadpool starts on first use and logs its CPU probing then: start it here.
    with native_stderr(), warnings.catch_warnings():
        # It warns on import that its Python API is experimental: known (see README).
        warnings.simplefilter("ignore")
        from executorch.extension.pybindings import portable_lib

        portable_lib._threadpool_get_thread_count()
    return portable_lib


def _executorch_threads(threads: int) -> None:
    """Set ExecuTorch's threadpool to ``threads`` threads, where XNNPACK runs its kernels."""
    lib = _portable_lib()
    if lib._threadpool_get_thread_count() != threads:
        with native_stderr():  # it logs every reset
            lib._unsafe_reset_threadpool(threads)
        _POOL_RESETS[0] += 1


class _ExecuTorchSession:
    """A .pte program loaded with the threadpool at ``threads`` threads, reloaded whenever
    the pool was reset since."""

    def __init__(self, program: bytes, threads: int) -> None:
        self.program = program
        self.threads = threads
        self.resets = -1
        self.loaded: Any = None  # the Program: it owns the bytes and the method's memory,
        self.method: Any = None  # so it is held as long as the method
        self.prepare()

    def prepare(self) -> None:
        from executorch.runtime import Runtime as EtRuntime

        _executorch_threads(self.threads)
        if self.resets == _POOL_RESETS[0]:
            return
        self.method = self.loaded = None
        with native_stderr() as log:
            try:
                self.loaded = EtRuntime.get().load_program(self.program)
                self.method = self.loaded.load_method("forward")
            except RuntimeError as err:
                said = log.getvalue().decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"{err} ({said[-1] if said else 'no runtime log'})") from err
        if self.method is None:
            raise RuntimeError("the program has no forward method")
        self.resets = _POOL_RESETS[0]

    def run(self, images: torch.Tensor) -> torch.Tensor:
        if self.resets != _POOL_RESETS[0]:
            self.prepare()
        out = self.method.execute([images.contiguous()])  # outputs are copies (the caller's)
        result: torch.Tensor = out[0]
        return result


def _load_executorch(program: bytes, threads: int) -> Session:
    session = _ExecuTorchSession(program, threads)
    return Session(session.run, session.prepare, threads)


# -- ONNX Runtime ----------------------------------------------------------------------------


class _QuietOnnx(logging.Filter):
    """ONNX Runtime's quantizer advises pre-processing on the root logger at every call.
    The dynamo exporter already folds batch norm and infers shapes, which is what the
    pre-processing does; measured on the quick study's net, with and without it, INT8
    latency and top-1 agreement were equal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def _lower_onnx(model: nn.Module, sample: torch.Tensor,
                calibration: torch.Tensor | None) -> bytes:
    with torch.no_grad():
        # A free batch dimension: one file serves every batch size (as the existing
        # ``--format onnx`` export has always written it).
        exported = torch.onnx.export(
            model, (sample,), None, dynamo=True, input_names=["images"],
            output_names=["logits"], dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
            opset_version=ONNX_OPSET, verbose=False,
        )
    assert exported is not None
    data: bytes = exported.model_proto.SerializeToString()
    if calibration is None:
        return data
    return _quantize_onnx(data, calibration)


def _quantize_onnx(data: bytes, calibration: torch.Tensor) -> bytes:
    """ONNX Runtime's static QDQ quantization: int8 activations (per tensor, min-max over
    the calibration images) and int8 weights (per output channel, symmetric), the same
    scheme as the ExecuTorch path. (Unsigned activations were as fast on this CPU.)"""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                {"images": calibration[i:i + CALIBRATION_BATCH].numpy()}
                for i in range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    quiet = _QuietOnnx()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="dwsearch-onnx-") as folder:
            source = os.path.join(folder, "model.onnx")
            target = os.path.join(folder, "model-int8.onnx")
            with open(source, "wb") as fh:
                fh.write(data)
            quantize_static(source, target, Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8)
            with open(target, "rb") as quantized:
                return quantized.read()
    finally:
        root.removeFilter(quiet)


def _load_onnx(program: bytes, threads: int) -> Session:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One model, one graph: inter-op parallelism has nothing to run side by side.
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: warnings would break the tables
    session = ort.InferenceSession(program, options, providers=["CPUExecutionProvider"])

    def run(images: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(["logits"], {"images": images.contiguous().numpy()})
        return torch.from_numpy(out)

    return Session(run, lambda: None, threads)
