from model import constants as C


def test_derived_numbers_are_pinned() -> None:
    assert C.SEGMENT_SAMPLES == 88_200
    assert C.N_FRAMES == 86
    assert C.REFERENCE_FRAMES == 87
    assert C.CONV_OUT_FEATURES == 2_560
    assert C.COMBINED_FEATURES == 62
    assert C.MIN_TAIL_SAMPLES == 22_050


def test_feature_config_names_kind_and_refuses_other_widths() -> None:
    assert C.feature_config()["kind"] == "mfcc"
    assert C.feature_config(62)["kind"] == "combined"
    try:
        C.feature_config(41)
    except ValueError as err:
        assert "40" in str(err) and "62" in str(err)
    else:
        raise AssertionError("41 features accepted")
