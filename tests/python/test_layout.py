"""The numpy dtypes of ringkernel.layout match what the C++ compiler laid out (layout.h)."""

import pytest

from ringkernel import _core, layout

CASES = {
    "ring_header": layout.RING_HEADER_DTYPE,
    "envelope": layout.ENVELOPE_DTYPE,
    "control_block": layout.CONTROL_BLOCK_DTYPE,
    "telemetry": layout.TELEMETRY_DTYPE,
    "route": layout.ROUTE_DTYPE,
    "channel": layout.CHANNEL_DTYPE,
    "routes": layout.ROUTES_DTYPE,
    "buffer_entry": layout.BUFFER_ENTRY_DTYPE,
    "buffer_table": layout.BUFFER_TABLE_DTYPE,
    "kernel_params": layout.KERNEL_PARAMS_DTYPE,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dtype_size_matches_c(name):
    assert CASES[name].itemsize == _core.layout_info()[name]["size"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_c_field_has_the_same_offset_and_size(name):
    dtype, info = CASES[name], _core.layout_info()[name]
    for field, (offset, size) in info["fields"].items():
        assert field in dtype.fields, f"{name}.{field} missing from the numpy dtype"
        field_dtype, field_offset = dtype.fields[field][:2]
        assert field_offset == offset, f"{name}.{field}: numpy offset {field_offset}, C offset {offset}"
        assert field_dtype.itemsize == size, f"{name}.{field}: numpy size {field_dtype.itemsize}, C size {size}"


def test_design_sizes():
    assert layout.CONTROL_BLOCK_DTYPE.itemsize == 128
    assert layout.TELEMETRY_DTYPE.itemsize == 64
    assert layout.ENVELOPE_DTYPE.itemsize <= 64
    assert layout.RING_HEADER_DTYPE.fields["tail"][1] - layout.RING_HEADER_DTYPE.fields["head"][1] == 128
