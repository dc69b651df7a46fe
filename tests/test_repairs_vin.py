import pytest

from py_server.extras.repairs.vin import InvalidVinError, normalize_vin, validate_vin


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("XWEG3417BN0009095", "XWEG3417BN0009095"),
        ("  xweg3417bn0009095\n", "XWEG3417BN0009095"),
        ("XWEG-3417-BN-0009095", "XWEG3417BN0009095"),
        ("XWEG 3417 BN 0009095", "XWEG3417BN0009095"),
        ("XWEG\u00a03417–BN0009095", "XWEG3417BN0009095"),  # NBSP and an en dash from a word processor
        ("Х94С241ВВМР221738", "X94C241BBMP221738"),  # Cyrillic Х, С, В, М, Р typed on a Russian layout
        ("z94с241bbмr221738", "Z94C241BBMR221738"),  # lower-case Cyrillic с and м
        ("АВЕКМНОРСТУХ", "ABEKMHOPCTYX"),
        ("авекмнорстух", "ABEKMHOPCTYX"),
    ],
)
def test_normalize_vin_folds_case_drops_separators_and_maps_cyrillic(raw: str, expected: str) -> None:
    assert normalize_vin(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "XWEG3417BN0009095",  # fails the ISO 3779 check digit: must still pass
        "Z94C241BBMR221738",  # fails it too
        "1HGCM82633A004352",  # a North American VIN with a correct check digit
        "xtа210930у2796514",  # mixed Latin and Cyrillic
        "00000000000000000",
    ],
)
def test_valid_vins_pass_without_a_check_digit_test(raw: str) -> None:
    assert validate_vin(raw) == normalize_vin(raw)


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ("XWEG3417BNI009O95", ["недопустимые символы: I, O", "«XWEG3417BNI009O95»"]),
        ("XWEG3417BN000909Q", ["недопустимые символы: Q"]),
        ("XWEG3417BN00О9095", ["недопустимые символы: O"]),  # Cyrillic О maps to Latin O, still invalid
        ("XWEG3417BN00Ж9095", ["недопустимые символы: Ж"]),
        ("XWEG3417BN00_9.95", ["недопустимые символы: _, ."]),
        ("XWEG3417BN000909", ["длина 16 вместо 17"]),
        ("XWEG3417BN00090955", ["длина 18 вместо 17"]),
        ("XWEG3417IN", ["недопустимые символы: I", "длина 10 вместо 17"]),
        ("", ["VIN не указан"]),
        (" - ", ["VIN не указан"]),
    ],
)
def test_invalid_vins_name_the_problem(raw: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidVinError) as info:
        validate_vin(raw)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert "17 символов" in message  # every message says what a VIN looks like


@pytest.mark.parametrize("raw", [None, 12345678901234567, ["XWEG3417BN0009095"]])
def test_a_vin_that_is_not_a_string_is_rejected(raw: object) -> None:
    with pytest.raises(InvalidVinError, match="строкой"):
        validate_vin(raw)


def test_a_very_long_input_is_not_echoed_in_full() -> None:
    with pytest.raises(InvalidVinError) as info:
        validate_vin("A" * 5000)
    assert len(str(info.value)) < 300
    assert "длина 5000 вместо 17" in str(info.value)
