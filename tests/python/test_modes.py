"""Kernel modes are an enum (rk.Mode) in Python and C++; names are still accepted at the API edge."""

import numpy as np
import pytest

import ringkernel as rk

REC = np.dtype([("x", "<f8")])


def test_mode_is_a_str_enum_with_the_three_modes():
    assert [m.value for m in rk.Mode] == ["auto", "persistent", "dispatch"]
    assert rk.Mode.PERSISTENT == "persistent" and str(rk.Mode.DISPATCH) == "dispatch"


def test_a_cpu_kernel_reports_persistent_as_the_enum():
    with rk.Runtime("cpu", mode=rk.Mode.AUTO) as rt:
        k = rt.launch("a", "echo", input=REC, mode=rk.Mode.PERSISTENT)
        assert k.mode is rk.Mode.PERSISTENT
        b = rt.launch("b", "echo", input=REC, mode="auto")  # a name works too
        assert b.mode is rk.Mode.PERSISTENT
        with pytest.raises(ValueError, match=r"the CPU backend runs kernels persistently"):
            rt.launch("c", "echo", input=REC, mode=rk.Mode.DISPATCH)


def test_unknown_modes_are_refused_with_the_valid_names():
    with pytest.raises(ValueError, match=r"mode must be 'auto', 'persistent' or 'dispatch' \(or an rk.Mode\), got 'sometimes'"):
        rk.Runtime("cpu", mode="sometimes")
    with rk.Runtime("cpu") as rt:
        with pytest.raises(ValueError, match=r"got 'often'"):
            rt.launch("k", "echo", input=REC, mode="often")
        with pytest.raises(TypeError, match=r"mode must be an rk.Mode"):
            rt.launch("k", "echo", input=REC, mode=3)
