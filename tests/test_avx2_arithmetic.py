"""int8 as CPUs without VNNI compute it: u8×s8 pair sums saturate at int16 (VPMADDUBSW)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kd_pipeline.core.data import Split, normalize_numpy
from kd_pipeline.core.params import QuantizeParams
from kd_pipeline.evaluate.fidelity import int8_fidelity
from kd_pipeline.evaluate.machine import cpu_info
from kd_pipeline.evaluate.runtime import onnx_runner
from kd_pipeline.quantize.avx2_arithmetic import (
    INT8,
    UINT8,
    Int8Graph,
    Quantized,
    Saturation,
    int_conv,
    int_matmul,
)
from kd_pipeline.quantize.mixed_precision import controlled_int8
from kd_pipeline.quantize.onnx_export import export_onnx
from kd_pipeline.quantize.quantization import CalibrationImages, prepare_onnx, quantize_prepared

# The int8 paths (evaluate.machine) whose u8s8 kernels add product pairs in saturating int16 lanes.
SATURATING_PATHS = ("AVX2 (no VNNI: u8s8 may saturate)", "AVX-512 (no VNNI)")
CARD = {"mean": [0.5] * 3, "std": [0.25] * 3, "class_names": ["a", "b", "c", "d"]}


def _q(values: list | np.ndarray, dtype: int, zero: float = 0.0, scale: float | list = 1.0) -> Quantized:
    return Quantized(torch.tensor(np.asarray(values, np.float64)), torch.tensor(scale, dtype=torch.float64),
                     torch.tensor(zero, dtype=torch.float64), dtype)


def test_a_pair_of_large_products_is_clamped_to_int16() -> None:
    x = _q(np.full((1, 2, 1, 1), 255.0), UINT8)
    w = _q(np.full((1, 2, 1, 1), 127.0), INT8, scale=[1.0])
    exact, _, _ = int_conv(x, w, {}, saturate=False)
    saturated, pairs, clamped = int_conv(x, w, {}, saturate=True)
    assert float(exact) == 2 * 255 * 127
    assert float(saturated) == 32767 and (pairs, clamped) == (1, 1)


def test_pairs_are_adjacent_input_channels_at_one_tap() -> None:
    """Channels 0 and 1 pair; channel 2 pairs with a zero pad, so 127 on channels 0 and 2 never
    saturates while 127 on channels 0 and 1 does."""
    x = _q(np.full((1, 3, 1, 1), 255.0), UINT8)
    apart = _q(np.array([127.0, 0.0, 127.0]).reshape(1, 3, 1, 1), INT8, scale=[1.0])
    together = _q(np.array([127.0, 127.0, 0.0]).reshape(1, 3, 1, 1), INT8, scale=[1.0])
    assert int_conv(x, apart, {}, saturate=True)[2] == 0
    assert int_conv(x, together, {}, saturate=True)[2] == 1


def test_with_an_odd_channel_count_pairs_run_across_taps() -> None:
    """The im2col row in (ky, kx, c) order: with 3 channels, channel 2 of tap (0, 0) pairs with
    channel 0 of tap (0, 1), as ONNX Runtime's AVX2 kernels pair them (an AVX2-only AMD EPYC:
    results/pneumoniamnist-avx2-pairing); the row's odd end pairs with zero."""
    x = _q(np.full((1, 3, 1, 2), 255.0), UINT8)
    across = np.zeros((1, 3, 1, 2))
    across[0, 2, 0, 0] = across[0, 0, 0, 1] = 127.0
    saturated, pairs, clamped = int_conv(x, _q(across, INT8, scale=[1.0]), {}, saturate=True)
    assert (pairs, clamped) == (3, 1) and float(saturated) == 32767
    last = np.zeros((1, 3, 1, 2))
    last[0, 2, 0, 1] = 127.0  # the row's sixth element, alone in the last pair
    assert int_conv(x, _q(last, INT8, scale=[1.0]), {}, saturate=True)[2] == 0


def test_zero_point_padding_and_negative_sums() -> None:
    """Padding holds the zero point (it multiplies like any u8 value), and sums below -32,768
    clamp too; the zero point's correction is exact."""
    x = _q(np.full((1, 2, 1, 1), 200.0), UINT8, zero=200.0)  # every real value 0
    w = _q(np.full((1, 2, 3, 3), -127.0), INT8, scale=[1.0])
    exact, _, _ = int_conv(x, w, {"pads": [1, 1, 1, 1]}, saturate=False)
    saturated, pairs, clamped = int_conv(x, w, {"pads": [1, 1, 1, 1]}, saturate=True)
    assert float(exact) == 0.0
    assert (pairs, clamped) == (9, 9)  # 9 taps, one channel pair each, all 200·(-254) < -32,768
    assert float(saturated) == pytest.approx(9 * (-32768 + 200 * 254))


def test_depthwise_convs_and_seven_bit_weights_never_saturate() -> None:
    x = _q(np.full((1, 4, 3, 3), 255.0), UINT8)
    depthwise = _q(np.full((4, 1, 3, 3), 127.0), INT8, scale=[1.0] * 4)
    assert int_conv(x, depthwise, {"group": 4}, saturate=True)[2] == 0
    seven_bit = _q(np.full((2, 4, 3, 3), 64.0), INT8, scale=[1.0] * 2)
    assert int_conv(x, seven_bit, {}, saturate=True)[2] == 0


def test_matmul_pairs_adjacent_elements() -> None:
    x = _q(np.full((1, 4), 255.0), UINT8)
    w = _q(np.array([[127.0, 127.0, 127.0, -127.0]]), INT8, scale=[1.0])  # (O, K), transB
    acc, pairs, clamped = int_matmul(x, w, trans_b=True, saturate=True)
    assert (pairs, clamped) == (2, 1) and float(acc) == 32767 + 0


def _bright_gray_network() -> nn.Module:
    """A first conv whose three input channels carry the same large weights, as a network trained
    on gray images replicated to RGB learns: on bright pixels each channel pair saturates."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    with torch.no_grad():
        first = torch.randn(8, 1, 3, 3) * 0.05
        first[:, :, 1, 1] = torch.linspace(-1.0, 1.0, 8).reshape(8, 1)
        net[0].weight.copy_(first.expand(8, 3, 3, 3))
    return net.eval()


@pytest.fixture(scope="module")
def gray(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Split, Split]:
    folder = tmp_path_factory.mktemp("avx2")
    fp32 = folder / "m.fp32.onnx"
    export_onnx(_bright_gray_network(), [3, 16, 16], fp32)
    rng = np.random.default_rng(0)
    images = np.repeat(rng.integers(120, 256, (160, 16, 16, 1), dtype=np.uint8), 3, axis=3)
    labels = onnx_runner(fp32, CARD["mean"], CARD["std"], threads=1)(images).argmax(1)
    return fp32, Split(images[:64], labels[:64]), Split(images[64:], labels[64:])


def test_the_emulation_computes_what_onnx_runtime_does_on_this_cpu(gray: tuple, tmp_path: Path) -> None:
    """ONNX Runtime here and the emulation of this CPU's arithmetic make the same decisions: exact
    int32 sums where VNNI or AMX run int8, pair sums clamped to int16 where AVX2 does. The other
    arithmetic must miss ONNX Runtime by far: on an AVX2 CPU that shows the saturation is ONNX
    Runtime's own, not the emulation's invention (seen on an AMD EPYC with AVX2 only), and on a
    VNNI/AMX CPU that the check can tell the two apart. 7-bit weights saturate on neither."""
    saturating = cpu_info()["int8_kernels"] in SATURATING_PATHS
    fp32, train, val = gray
    prepared = prepare_onnx(fp32)
    for reduce_range in (False, True):
        int8 = tmp_path / f"m{reduce_range}.int8.onnx"
        quantize_prepared(prepared, int8, QuantizeParams(), CalibrationImages(
            train, np.arange(64), CARD["mean"], CARD["std"], 32), reduce_range=reduce_range)
        runtime = onnx_runner(int8, CARD["mean"], CARD["std"], threads=1)(val.images)
        graph = Int8Graph(int8)
        images = normalize_numpy(val.images, CARD["mean"], CARD["std"])
        exact = graph(images, saturate=False)
        saturation = Saturation()
        saturated = graph(images, True, saturation)
        here, other = (saturated, exact) if saturating else (exact, saturated)
        assert (here.argmax(1) == runtime.argmax(1)).mean() >= 0.95  # requantization rounds ties apart
        assert np.abs(here - runtime).max() <= 0.05 * np.abs(runtime).max()
        if reduce_range:
            assert sum(saturation.clamped.values()) == 0 and np.array_equal(saturated, exact)
        else:
            assert max(saturation.rates().values()) > 0.01, "bright gray pixels were expected to saturate"
            assert np.abs(other - runtime).max() > 0.2 * np.abs(runtime).max(), \
                f"ONNX Runtime's int8 path here ({cpu_info()['int8_kernels']}) matched the other arithmetic"


def test_accuracy_control_keeps_the_format_that_holds_on_both_kinds_of_cpu(gray: tuple, tmp_path: Path) -> None:
    fp32, train, val = gray
    prepared = prepare_onnx(fp32)
    cfg = QuantizeParams(max_accuracy_drop=0.02, min_integer_mac_share=0.0)
    control = controlled_int8(fp32, prepared, tmp_path / "m.int8.onnx", cfg,
                              lambda: CalibrationImages(train, np.arange(64), CARD["mean"], CARD["std"], 32),
                              val, CARD, "accuracy")
    u8s8, seven_bit = control.formats
    assert (u8s8.format, seven_bit.format) == ("u8s8", "u8s8 7-bit weights")
    assert u8s8.avx2_val["accuracy"] < u8s8.val["accuracy"], "saturation was expected to cost decisions"
    assert not u8s8.check["avx2_pass"] and seven_bit.saturated == {}
    ranked = sorted(control.formats, key=lambda a: (not a.check["pass"], a.check["int8_val_drop"]))
    assert control.attempts[0] is ranked[0] and control.chosen.check["pass"]
    assert control.chosen.format == "u8s8 7-bit weights"
    assert all(a.latency_ms and a.latency_ms > 0 for a in control.formats)


def test_the_int8_gate_fails_on_avx2_alone() -> None:
    source = {"accuracy": 0.9, "balanced_accuracy": 0.9}
    here = {"accuracy": 0.9, "balanced_accuracy": 0.9}
    avx2 = {"accuracy": 0.85, "balanced_accuracy": 0.85}
    check = int8_fidelity(here, source, "accuracy", QuantizeParams(max_accuracy_drop=0.01), avx2)
    assert not check["pass"] and check["native_pass"] and not check["avx2_pass"]
    assert check["int8_val_drop"] == pytest.approx(0.05) and "without VNNI" in check["reason"]
    assert int8_fidelity(here, source, "accuracy", QuantizeParams(max_accuracy_drop=0.01))["pass"]


def test_a_graph_the_emulation_cannot_run_is_checked_here_only(tmp_path: Path) -> None:
    """An operator the emulation lacks (GELU's Erf, as in a ViT) does not stop quantize: the int8
    file is checked on this CPU, and its card says so."""
    from kd_pipeline.quantize.int8_variants import safe_on

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 4)).eval()
    fp32 = tmp_path / "g.fp32.onnx"
    export_onnx(net, [3, 8, 8], fp32)
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    labels = onnx_runner(fp32, CARD["mean"], CARD["std"], threads=1)(images).argmax(1)
    split = Split(images, labels)
    control = controlled_int8(fp32, prepare_onnx(fp32), tmp_path / "g.int8.onnx",
                              QuantizeParams(max_accuracy_drop=1.0, min_integer_mac_share=0.0),
                              lambda: CalibrationImages(split, np.arange(64), CARD["mean"], CARD["std"], 32),
                              split, CARD, "accuracy")
    assert control.chosen.avx2_val is None and not control.chosen.check["avx2_checked"]
    assert safe_on(control.chosen).startswith("this CPU only")
