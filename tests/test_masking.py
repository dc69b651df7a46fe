"""Personal-data masking: what is masked, what must survive, and how results carry the counts.

Every identifier here is invented, with valid check digits unless a test says otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import re
from collections import Counter
from typing import Any

import pytest
from mcp import types

from py_server.config import NAMES_KIND, PII_KINDS, Settings
from py_server.demo import onec_data
from py_server.errors import ConfigError
from py_server.main import main
from py_server.masking import (
    KINDS,
    MASKED_META_KEY,
    TAG_HEX_DIGITS,
    Masker,
    account_key_valid,
    card_valid,
    inn_valid,
    luhn_valid,
    masked_counts,
    snils_valid,
)

from .pii_corpus import load_corpus, normalized, score

KEY = b"test-key"
INN10 = "7762096653"  # ООО, Москва
INN12 = "776284809735"  # a person
INN10_BY_CHANCE = "6324780217"  # passes the check digit, but is an invoice number
SNILS = "046-962-420 81"
BIC = "044525974"
ACCOUNT = "40702810072943648375"  # keyed with BIC
CORR_ACCOUNT = "30101810900000000974"  # the bank's к/с at the Bank of Russia, keyed with BIC
CARD = "4276 0494 0326 9919"


def masker(*kinds: str) -> Masker:
    return Masker(kinds or ("all",), key=KEY)


def masked(text: str, *kinds: str) -> tuple[str, Counter[str]]:
    counts: Counter[str] = Counter()
    return masker(*kinds).mask_text(text, counts), counts


def tag(kind: str, value: str) -> str:
    return masker().tag(kind, normalized(kind, value))


def flip(value: str, position: int = -1) -> str:
    """`value` with one digit changed: the check must fail."""
    digits = list(value)
    digits[position] = str((int(digits[position]) + 1) % 10)
    return "".join(digits)


# --- checksums ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [INN10, INN12, "7802019930", "500033076665"])
def test_inn_check_digits_accept_valid_numbers_and_reject_any_changed_digit(value: str) -> None:
    assert inn_valid(value)
    assert not inn_valid(flip(value))
    assert not inn_valid(flip(value, 0))
    assert not inn_valid(value[:-1])


@pytest.mark.parametrize(
    "value",
    [
        "04696242081",
        "40210248800",  # weighted sum 100: check number 00
        "14114170200",  # weighted sum 101: 00
        "64218592400",  # weighted sum 201: 201 mod 101 is 100, so 00
        "39825979166",  # weighted sum 268: 268 mod 101
    ],
)
def test_snils_check_number_follows_the_pfr_rule_including_sums_of_100_and_101(value: str) -> None:
    assert snils_valid(value)
    assert not snils_valid(flip(value))


def test_snils_numbers_up_to_001_001_998_have_no_check_number_and_never_match() -> None:
    assert not snils_valid("00100199864")  # the weighted sum is 64, but the number is too low to have a check
    assert snils_valid("00100200015")


def test_cards_need_luhn_and_a_prefix_and_length_that_a_network_issues() -> None:
    assert card_valid(CARD.replace(" ", "")) and card_valid("2202023740954619") and card_valid("370038268322346")
    assert not card_valid(flip(CARD.replace(" ", "")))
    assert luhn_valid("1000000000000008") and not card_valid("1000000000000008")  # no network starts with 1
    assert luhn_valid("42769458073020") and not card_valid("42769458073020")  # Visa has no 14-digit cards


def test_account_key_uses_the_bank_digits_of_the_bic_or_the_branch_digits_for_a_correspondent_account() -> None:
    assert account_key_valid(ACCOUNT, BIC) and account_key_valid(CORR_ACCOUNT, BIC)
    assert not account_key_valid(flip(ACCOUNT, 8), BIC)  # the 9th digit is the key
    assert not account_key_valid(ACCOUNT, "044030786")  # another bank
    assert not account_key_valid(CORR_ACCOUNT, "044030786")


# --- each kind ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("email", "пишите на Sidorov.AV@Romashka-Trade.ru.", "Sidorov.AV@Romashka-Trade.ru"),
        ("email", "почта: info@почта.рф", "info@почта.рф"),
        ("phone", "+7 (495) 788-12-34", "+7 (495) 788-12-34"),
        ("phone", "звоните 8 800 505-77-77!", "8 800 505-77-77"),
        ("phone", "+79852604471", "+79852604471"),
        ("phone", "8-912-640-33-87", "8-912-640-33-87"),
        ("phone", "8(8182)20-45-67", "8(8182)20-45-67"),
        ("phone", "факс (383) 209-14-78", "(383) 209-14-78"),
        ("phone", "моб. 89132047715", "89132047715"),
        ("phone", "Телефон: 79132047715", "79132047715"),
        ("card", f"карта {CARD}", CARD),
        ("card", "4276-0494-0326-9919", "4276-0494-0326-9919"),
        ("card", "Карта: 5469113930955970", "5469113930955970"),
        ("account", f"р/с {ACCOUNT}", ACCOUNT),
        ("account", f"Сч. № {ACCOUNT}", ACCOUNT),
        ("account", f"расчётный счёт {ACCOUNT}", ACCOUNT),
        ("account", f"корр. счёт {CORR_ACCOUNT}", CORR_ACCOUNT),
        ("account", "р/с 40702 810 0 7294 3648375", "40702 810 0 7294 3648375"),
        ("inn", f"ИНН {INN10}", INN10),
        ("inn", f"ИНН/КПП: {INN10}/776201001", INN10),
        ("inn", f"ИНН покупателя: {INN10}", INN10),
        ("inn", f"налогоплательщик {INN10}", INN10),
        ("inn", f"{INN10}/776201001", INN10),
        ("inn", f"физлицо {INN12}", INN12),
        ("snils", f"СНИЛС {SNILS}", SNILS),
        ("snils", "046-962-420-81", "046-962-420-81"),
        ("snils", "СНИЛС 04696242081", "04696242081"),
        ("passport", "паспорт 45 08 417293", "45 08 417293"),
        ("passport", "Паспорт гражданина РФ: серия 4508 № 417293", "4508 № 417293"),
        ("passport", "серия 45 08 номер 417293", "45 08 номер 417293"),
        ("passport", "паспорт 4508417293", "4508417293"),
        ("passport", "паспорт: серия 4508, номер 417293", "4508, номер 417293"),
    ],
)
def test_each_kind_is_masked_in_its_usual_spellings(kind: str, text: str, value: str) -> None:
    result, counts = masked(text)
    assert result == text.replace(value, tag(kind, value))
    assert counts == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"Счёт на оплату № {INN10_BY_CHANCE}", id="10 digits passing the ИНН check, unnamed"),
        pytest.param(f"Заказ {flip(INN10)}, ИНН {flip(INN10)}", id="ИНН label with a wrong check digit"),
        pytest.param("Сумма: 1234567890.00, 1 234 567 890,00", id="sums"),
        pytest.param(f"артикул АРТ{INN12} и АРТ-{INN12}", id="identifier glued to an article prefix"),
        pytest.param(f"9{INN12}1 и {INN10}{INN10}", id="identifiers inside longer digit runs"),
        pytest.param(f"р/с 1{ACCOUNT}, карта 1 {CARD}, СНИЛС 1-{SNILS}", id="identifiers ending a longer number"),
        pytest.param("КПП 776201001, ОГРН 1027766392334, БИК 044525974, ОКПО 12345678", id="other codes"),
        pytest.param("Штрихкод 4607876023070; ОГРНИП 304504806358178", id="barcode and ОГРНИП"),
        pytest.param("Номер заказа на сайте: 4100532927355209", id="contiguous Luhn-valid number, unnamed"),
        pytest.param("Дисконтная карта 2000000123456", id="card label, but no card network"),
        pytest.param(f"КБК 18210102010011000110, БИК {BIC}", id="КБК passing the account key"),
        pytest.param("Идентификатор 20240315000000012345, БИК 044525974", id="20 digits failing the key"),
        pytest.param("8 123 456-78-90, +7 (123) 456-78-90, 8-800-555-35-3", id="phones with no such code"),
        pytest.param("Номер заказа 89161234567", id="bare 11 digits, unnamed"),
        pytest.param("Партия 8 2024 123456, маршрут 8 4512 345678", id="counts before numbers"),
        pytest.param("Год 7 (495 шт.) и 7 4951234567", id="7 without parentheses"),
        pytest.param("Серия 4567 123456; серия 0050 123456", id="passport with an impossible year or region"),
        pytest.param("Маршрут 4508 417293", id="passport shape, unnamed"),
        pytest.param("СНИЛС 046-962-420 82; номер 04696242081", id="СНИЛС with a wrong check, or unnamed"),
        pytest.param("Дата 15.03.2024 10:45:12, индекс 125009, код подразделения 770-001", id="dates and codes"),
        pytest.param("user@localhost и @mention", id="no e-mail without a domain"),
    ],
)
def test_near_misses_come_out_as_they_went_in(text: str) -> None:
    assert masked(text) == (text, Counter())


def test_a_ten_digit_inn_needs_a_label_while_a_twelve_digit_one_does_not() -> None:
    assert masked(f"Контрагент {INN10}")[0] == f"Контрагент {INN10}"
    assert masked(f"Контрагент {INN12}")[0] == f"Контрагент {tag('inn', INN12)}"


def test_a_label_followed_by_words_and_numbers_names_only_the_first_number() -> None:
    text = f"ИНН {INN10}, договор {INN10_BY_CHANCE}"
    assert masked(text)[0] == f"ИНН {tag('inn', INN10)}, договор {INN10_BY_CHANCE}"
    assert masked(f"ИНН: {INN10}, 7802019930")[0] == f"ИНН: {tag('inn', INN10)}, {tag('inn', '7802019930')}"


def test_a_number_sign_marks_a_document_number_not_an_identifier() -> None:
    assert masked(f"ИНН № {INN10}")[0] == f"ИНН № {INN10}"
    assert masked(f"Сч. № {ACCOUNT}")[0] == f"Сч. № {tag('account', ACCOUNT)}"  # but an account is written so


def test_a_label_at_the_end_of_the_line_above_names_the_value() -> None:
    text = f"Покупатель: ООО «Ромашка»\nИНН:\n{INN10}\n\nЗаказ:\n{INN10_BY_CHANCE}\n"
    assert masked(text)[0] == text.replace(INN10, tag("inn", INN10))


def test_the_nearest_label_decides_what_a_number_is() -> None:
    text = f"Учредитель: ООО «Инвест», телефон: нет, ИНН {INN10}"
    assert masked(text)[0] == text.replace(INN10, tag("inn", INN10))
    assert masked(f"ИНН организации, тел. {INN10}")[0] == f"ИНН организации, тел. {INN10}"  # "тел." is nearer


def test_an_unnamed_account_is_masked_only_when_its_key_matches_a_bic_in_the_same_text() -> None:
    assert masked(f"Номер {ACCOUNT}")[0] == f"Номер {ACCOUNT}"
    with_bic = f"Номер {ACCOUNT}, БИК {BIC}"
    assert masked(with_bic)[0] == with_bic.replace(ACCOUNT, tag("account", ACCOUNT))
    other_bank = f"Номер {ACCOUNT}, БИК 044030786"
    assert masked(other_bank)[0] == other_bank


def test_table_cells_take_their_label_from_the_column_header() -> None:
    table = (
        "| Таб. № | Заказ | ИНН | Паспорт | Телефон |\n"
        "|---|---|---|---|---|\n"
        f"| 0000000012 | {INN10_BY_CHANCE} | {INN10} | 45 08 417293 | 89132047715 |\n"
    )
    result, counts = masked(table)
    assert result.splitlines()[:2] == table.splitlines()[:2]
    cells = [cell.strip() for cell in result.splitlines()[2].split("|")[1:-1]]
    assert cells == ["0000000012", INN10_BY_CHANCE, tag("inn", INN10), tag("passport", "4508417293"),
                     tag("phone", "89132047715")]  # fmt: skip
    assert counts == {"inn": 1, "passport": 1, "phone": 1}


def test_a_two_column_table_of_details_takes_the_label_from_the_left_cell() -> None:
    text = f"Реквизит\tЗначение\nИНН\t{INN10}\nНомер\t{INN10_BY_CHANCE}\n"
    assert masked(text)[0] == f"Реквизит\tЗначение\nИНН\t{tag('inn', INN10)}\nНомер\t{INN10_BY_CHANCE}\n"


def test_cells_do_not_lend_their_label_to_the_next_cell() -> None:
    row = f"ИНН {INN10} | {INN10_BY_CHANCE}"
    assert masked(row)[0] == f"ИНН {tag('inn', INN10)} | {INN10_BY_CHANCE}"


def test_kinds_apply_in_order_so_an_e_mail_is_not_masked_again_as_a_phone() -> None:
    result, counts = masked("sms: +79852604471@sms.example.ru")
    assert result == f"sms: {tag('email', '+79852604471@sms.example.ru')}"
    assert counts == {"email": 1}


def test_only_the_enabled_kinds_are_masked() -> None:
    text = f"ИНН {INN10}, тел. +7 (495) 788-12-34, {SNILS}"
    result, counts = masked(text, "inn")
    assert result == text.replace(INN10, tag("inn", INN10))
    assert counts == {"inn": 1}


def test_all_enables_every_kind_and_an_unknown_kind_is_refused() -> None:
    assert Masker(["all"]).kinds == PII_KINDS
    assert Masker(["snils", "email"]).kinds == ("email", "snils")  # applied in PII_KINDS order
    with pytest.raises(ValueError, match="unknown personal-data kind fio"):
        Masker(["inn", "fio"])


def test_from_settings_takes_the_kinds_of_mask_pii() -> None:
    assert Masker.from_settings(Settings(_env_file=None, mask_pii="inn,phone")).kinds == ("phone", "inn")
    assert not Masker.from_settings(Settings(_env_file=None))


# --- tags -----------------------------------------------------------------------------------


def test_a_tag_is_the_kind_and_four_hex_digits_of_the_keyed_hmac_of_the_normalized_value() -> None:
    digest = hmac.new(KEY, ("phone" + "74957881234").encode(), hashlib.sha256).hexdigest()
    assert masker().tag("phone", "74957881234") == f"[ТЕЛЕФОН#{digest[:TAG_HEX_DIGITS]}]"
    labels = {masker().tag(kind, "1")[1:].split("#")[0] for kind in PII_KINDS}
    assert labels == {"EMAIL", "ТЕЛЕФОН", "КАРТА", "СЧЁТ", "ИНН", "СНИЛС", "ПАСПОРТ"}


def test_the_same_value_gets_the_same_tag_however_it_is_written_and_different_values_differ() -> None:
    result, _ = masked(
        "+7 (495) 788-12-34, 8 495 788-12-34, +74957881234, I@Example.ru, i@example.ru, +7 495 788-12-35"
    )
    tags = re.findall(r"\[[^]]+\]", result)
    assert len(set(tags[:3])) == 1 and tags[3] == tags[4]
    assert tags[5] != tags[0]


def test_without_a_key_each_masker_draws_its_own_so_tags_mean_nothing_elsewhere() -> None:
    values = [INN12, "500033076665", "787679520154"]
    first, second = Masker(["inn"]), Masker(["inn"])
    assert [first.tag("inn", v) for v in values] != [second.tag("inn", v) for v in values]
    assert [first.tag("inn", v) for v in values] == [first.tag("inn", v) for v in values]


def test_masking_twice_changes_nothing_more() -> None:
    once, counts = masked(f"ИНН {INN10}, р/с {ACCOUNT}, {SNILS}, паспорт 45 08 417293, i@example.ru")
    assert sum(counts.values()) == 5
    assert masked(once) == (once, Counter())


# --- values ---------------------------------------------------------------------------------


def test_dict_keys_name_their_values_and_stay_as_they_are() -> None:
    value = {
        "ИНН": INN10,
        "ИННКонтрагента": INN10,
        "counterparty_inn": INN10,
        "Номер": INN10_BY_CHANCE,
        "Телефоны": ["89132047715", "+7 (495) 788-12-34"],
        "Паспорт": "4508 417293",
        "Сумма": 7762096653,
        "Проведен": True,
    }
    counts: Counter[str] = Counter()
    result = masker().mask_value(value, counts)
    inn = tag("inn", INN10)
    assert result == {
        "ИНН": inn, "ИННКонтрагента": inn, "counterparty_inn": inn, "Номер": INN10_BY_CHANCE,
        "Телефоны": [tag("phone", "89132047715"), tag("phone", "+7 (495) 788-12-34")],
        "Паспорт": tag("passport", "4508417293"), "Сумма": 7762096653, "Проведен": True,
    }  # fmt: skip
    assert counts == {"inn": 3, "phone": 2, "passport": 1}
    assert value["ИНН"] == INN10  # the input is not changed


def test_a_key_hint_names_a_bare_value() -> None:
    counts: Counter[str] = Counter()
    assert masker().mask_value(INN10, counts, key_hint="ИНН") == tag("inn", INN10)
    assert masker().mask_value(INN10, counts, key_hint="Номер") == INN10


def test_mask_arguments_returns_a_masked_copy_and_the_counts() -> None:
    arguments = {"inn": INN10, "filter": {"phone": "+7 (495) 788-12-34"}, "limit": 5}
    copy, counts = masker().mask_arguments(arguments)
    assert copy == {"inn": tag("inn", INN10), "filter": {"phone": tag("phone", "+7 (495) 788-12-34")}, "limit": 5}
    assert counts == {"phone": 1, "inn": 1}  # in PII_KINDS order
    assert arguments["inn"] == INN10


# --- MCP results ----------------------------------------------------------------------------

SECRET_TEXT = f"ИНН {INN10}"


def call_result(**extra: Any) -> types.CallToolResult:
    return types.CallToolResult(
        content=[
            types.TextContent(type="text", text=f"Покупатель: ООО «Ромашка», ИНН {INN10}"),
            types.ImageContent(type="image", data=SECRET_TEXT, mime_type="image/png"),
            types.AudioContent(type="audio", data=SECRET_TEXT, mime_type="audio/wav"),
            types.ResourceLink(type="resource_link", uri="file:///a.pdf", name="a.pdf", description=SECRET_TEXT),
            types.EmbeddedResource(type="resource", resource=types.TextResourceContents(uri="x:/t", text=SECRET_TEXT)),
            types.EmbeddedResource(type="resource", resource=types.BlobResourceContents(uri="x:/b", blob=SECRET_TEXT)),
        ],
        structured_content={"rows": [{"ИНН": INN10, "Номер": INN10_BY_CHANCE, "Счет": ACCOUNT}], "count": 1},
        **extra,
    )


def test_a_call_result_has_its_text_structured_content_and_embedded_text_masked_but_never_binary() -> None:
    original = call_result(_meta={"ru.1c.demo/truncated": True})
    result = masker().mask_call_result(original)
    inn = tag("inn", INN10)
    assert result.content[0].text == f"Покупатель: ООО «Ромашка», ИНН {inn}"
    assert result.content[4].resource.text == f"ИНН {inn}"
    assert result.content[3].description == f"ИНН {inn}"  # a link's words, not its URI
    assert result.content[3].uri == original.content[3].uri
    for unchanged in (1, 2, 5):
        assert result.content[unchanged] == original.content[unchanged]
    assert result.structured_content == {
        "rows": [{"ИНН": inn, "Номер": INN10_BY_CHANCE, "Счет": tag("account", ACCOUNT)}],
        "count": 1,
    }
    assert result.meta == {"ru.1c.demo/truncated": True, MASKED_META_KEY: {"account": 1, "inn": 4}}
    assert masked_counts(result) == {"account": 1, "inn": 4}
    wire = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["_meta"][MASKED_META_KEY] == {"account": 1, "inn": 4}


def test_masking_a_result_never_changes_the_input() -> None:
    original = call_result()
    before = original.model_dump()
    masker().mask_call_result(original)
    assert original.model_dump() == before and original.meta is None


def test_a_result_with_nothing_to_mask_is_returned_as_it_is() -> None:
    result = types.CallToolResult(content=[types.TextContent(type="text", text="Документ ТД00-000001 проведён")])
    assert masker().mask_call_result(result) is result
    assert masked_counts(result) == {}
    assert Masker([]).mask_call_result(call_result()).structured_content["rows"][0]["ИНН"] == INN10


def test_an_empty_masker_is_false() -> None:
    assert not Masker([]) and Masker(["inn"])


def test_an_account_in_structured_content_is_keyed_against_a_bic_in_the_text() -> None:
    result = types.CallToolResult(
        content=[types.TextContent(type="text", text=f"Банк: ПАО «Банк Пример», БИК {BIC}")],
        structured_content={"Номер": ACCOUNT},
    )
    assert masker().mask_call_result(result).structured_content == {"Номер": tag("account", ACCOUNT)}


def test_a_read_result_has_its_texts_masked_and_its_blobs_kept() -> None:
    original = types.ReadResourceResult(
        contents=[
            types.TextResourceContents(uri="file:///card.md", mime_type="text/plain", text=f"- ИНН: {INN10}"),
            types.BlobResourceContents(uri="file:///card.png", mime_type="image/png", blob=SECRET_TEXT),
        ],
        _meta={"keep": 1},
    )
    result = masker().mask_read_result(original)
    assert result.contents[0].text == f"- ИНН: {tag('inn', INN10)}"
    assert result.contents[0].uri == "file:///card.md" and result.contents[1] == original.contents[1]
    assert result.meta == {"keep": 1, MASKED_META_KEY: {"inn": 1}}
    assert original.contents[0].text == f"- ИНН: {INN10}"


def test_a_prompt_result_has_its_message_texts_and_embedded_resources_masked() -> None:
    original = types.GetPromptResult(
        description=f"Проверка контрагента ИНН {INN10}",
        messages=[
            types.PromptMessage(role="user", content=types.TextContent(type="text", text=f"Проверь ИНН {INN10}")),
            types.PromptMessage(
                role="user",
                content=types.EmbeddedResource(
                    type="resource", resource=types.TextResourceContents(uri="x:/c", text=f"тел. {'89132047715'}")
                ),
            ),
            types.PromptMessage(
                role="user", content=types.ImageContent(type="image", data=SECRET_TEXT, mime_type="image/png")
            ),
        ],
    )
    result = masker().mask_prompt_result(original)
    assert result.messages[0].content.text == f"Проверь ИНН {tag('inn', INN10)}"
    assert result.messages[1].content.resource.text == f"тел. {tag('phone', '89132047715')}"
    assert result.messages[2] == original.messages[2]
    assert result.description == f"Проверка контрагента ИНН {tag('inn', INN10)}"
    assert masked_counts(result) == {"phone": 1, "inn": 2}
    assert masker().mask_prompt_result(types.GetPromptResult(messages=original.messages[2:])).meta is None


def test_masked_counts_is_empty_for_a_result_without_them() -> None:
    assert masked_counts(types.CallToolResult(content=[], _meta={MASKED_META_KEY: "garbage"})) == {}
    assert masked_counts(types.ReadResourceResult(contents=[])) == {}


# --- the corpus -----------------------------------------------------------------------------


def test_the_corpus_labels_every_kind_with_identifiers_whose_check_digits_are_valid() -> None:
    pii = [(kind, normalized(kind, value)) for document in load_corpus() for kind, value in document.pii]
    assert {kind for kind, _ in pii} == set(KINDS)
    checks = {"inn": inn_valid, "snils": snils_valid, "card": card_valid}
    assert all(checks[kind](value) for kind, value in pii if kind in checks)


def test_every_labelled_identifier_of_the_corpus_is_masked() -> None:
    report = score()
    assert report.missed == []
    assert all(kind.recall == 1.0 for kind in report.kinds.values())


def test_no_negative_of_the_corpus_is_masked_and_nothing_unlabelled_is_either() -> None:
    report = score()
    assert report.negatives >= 100
    assert report.wrongly_masked == []
    assert (report.false_positives, report.unexpected) == (0, 0)
    assert all(kind.false_positives == 0 for kind in report.kinds.values())


# --- the demo base --------------------------------------------------------------------------


def test_the_demo_personal_data_has_valid_check_digits() -> None:
    for counterparty in onec_data.COUNTERPARTY_DETAILS:
        assert inn_valid(counterparty.inn)
        assert account_key_valid(counterparty.account, counterparty.bank.bic)
        assert account_key_valid(counterparty.bank.corr_account, counterparty.bank.bic)
    for employee in onec_data.STAFF:
        assert snils_valid(re.sub(r"\D", "", employee.snils)) and inn_valid(employee.inn)


def demo_secrets() -> list[str]:
    secrets = []
    for c in onec_data.COUNTERPARTY_DETAILS:
        secrets += [c.inn, c.account, c.bank.corr_account, c.phone, c.email, c.contact_phone, c.contact_email]
    for e in onec_data.STAFF:
        secrets += [e.snils, e.inn, e.passport, e.phone, e.email]
    return secrets


def test_every_identifier_the_demo_tools_and_resources_return_is_masked() -> None:
    demo = [types.CallToolResult.model_validate(onec_data.list_staff({}))] + [
        types.CallToolResult.model_validate(onec_data.get_counterparty({"inn": c.inn}))
        for c in onec_data.COUNTERPARTY_DETAILS
    ]
    shown = "".join(masker().mask_call_result(result).model_dump_json() for result in demo)
    card = onec_data.demo_resources()["file:///Контрагенты/Ромашка.md"].text or ""
    read = types.ReadResourceResult(contents=[types.TextResourceContents(uri="file:///c.md", text=card)])
    shown += masker().mask_read_result(read).model_dump_json()
    assert [secret for secret in demo_secrets() if secret in shown] == []
    for kept in ("776201001", "1027766392334", BIC, "0000000001", "18.04.1975"):  # КПП, ОГРН, БИК, таб. №, date
        assert kept in shown


# --- names (ФИО): the optional extra --------------------------------------------------------

NAMES_EXTRA = 'MCP_MASK_PII=names needs the optional extra: pip install "onec-mcp-proxy[pii-names]"'


def test_names_is_accepted_by_name_and_all_does_not_include_it() -> None:
    assert Settings(_env_file=None, mask_pii="all").mask_pii == list(PII_KINDS)
    assert Settings(_env_file=None, mask_pii="all, Names").mask_pii == [*PII_KINDS, NAMES_KIND]
    assert Settings(_env_file=None, mask_pii="names,inn").mask_pii == ["inn", NAMES_KIND]  # names applied last
    with pytest.raises(ValueError, match=r"use any of email, .*, passport, names or all"):
        Settings(_env_file=None, mask_pii="fio")


@pytest.fixture
def without_natasha(monkeypatch: pytest.MonkeyPatch) -> None:
    """natasha as if it were not installed, whether it is or not."""
    find_spec = importlib.util.find_spec

    def find_all_but_natasha(name: str, package: str | None = None) -> Any:
        return None if name == "natasha" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_all_but_natasha)


@pytest.mark.usefixtures("without_natasha")
def test_names_without_the_extra_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as raised:
        Masker.from_settings(Settings(_env_file=None, mask_pii="all,names"))
    assert str(raised.value) == NAMES_EXTRA
    assert Masker.from_settings(Settings(_env_file=None, mask_pii="all")).kinds == PII_KINDS  # no extra needed


@pytest.mark.usefixtures("without_natasha")
def test_the_proxy_refuses_to_start_with_names_but_without_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_ONEC_URL", "http://127.0.0.1:9/base")
    monkeypatch.setenv("MCP_MASK_PII", "names")
    assert main(["stdio"]) == 2
    assert capsys.readouterr().err == f"onec-mcp-proxy: {NAMES_EXTRA}\n"


# The tests below run the recogniser: they need the extra, and say so when they skip.


@pytest.fixture(scope="module")
def names() -> Masker:
    """Every kind, names too, with the fixed test key."""
    pytest.importorskip("natasha", reason='the names kind needs the optional extra: pip install -e ".[pii-names]"')
    return Masker(["all", NAMES_KIND], key=KEY)


def names_masked(names: Masker, text: str) -> tuple[str, Counter[str]]:
    counts: Counter[str] = Counter()
    return names.mask_text(text, counts), counts


def test_a_full_name_is_masked_and_organisations_and_places_stay(names: Masker) -> None:
    text = "Покупатель: ООО «Ромашка», г. Москва, ул. Ленина, д. 5. Контактное лицо: Кузнецов Павел Андреевич."
    result, counts = names_masked(names, text)
    assert result == text.replace("Кузнецов Павел Андреевич", tag(NAMES_KIND, "Кузнецов Павел Андреевич"))
    assert counts == {NAMES_KIND: 1}


def test_a_name_tag_is_fio_and_the_keyed_hmac_of_the_name_case_folded_with_spaces_collapsed(names: Masker) -> None:
    digest = hmac.new(KEY, (NAMES_KIND + "петрова м. с.").encode(), hashlib.sha256).hexdigest()
    assert names.tag(NAMES_KIND, normalized(NAMES_KIND, "Петрова  М. С.")) == f"[ФИО#{digest[:TAG_HEX_DIGITS]}]"
    first, _ = names_masked(names, "Отпуск разрешил: Петрова М. С.")
    second, _ = names_masked(names, "Отпуск разрешил: ПЕТРОВА  М. С.")
    assert first.endswith(f"[ФИО#{digest[:TAG_HEX_DIGITS]}]") and second.endswith(f"[ФИО#{digest[:TAG_HEX_DIGITS]}]")


def test_names_are_masked_after_the_other_kinds_and_never_inside_their_tags(names: Masker) -> None:
    text = f"Руководитель: Волков Игорь Семёнович, ИНН {INN12}, тел. +7 (495) 788-12-34, i.volkov@example.ru"
    result, counts = names_masked(names, text)
    assert result == (
        f"Руководитель: {tag(NAMES_KIND, 'Волков Игорь Семёнович')}, ИНН {tag('inn', INN12)}, "
        f"тел. {tag('phone', '+7 (495) 788-12-34')}, {tag('email', 'i.volkov@example.ru')}"
    )
    assert list(counts) == ["email", "phone", "inn", NAMES_KIND]
    assert names_masked(names, result) == (result, Counter())  # tags, ФИО ones too, are never masked again


def test_a_table_is_masked_cell_by_cell_where_the_whole_row_hides_names_from_the_recogniser(names: Masker) -> None:
    table = (
        "| Таб. № | ФИО | Должность |\n|---|---|---|\n"
        "| 0000000021 | Сидоров Алексей Викторович | Менеджер по продажам |\n"
        "| 0000000034 | Кузнецова Ольга Андреевна | Кладовщик |\n"
    )
    result, counts = names_masked(names, table)
    assert "Сидоров" not in result and "Кузнецова" not in result and counts == {NAMES_KIND: 2}
    assert "| Менеджер по продажам |" in result and "| Кладовщик |" in result  # a lone word is no name by itself


def test_a_lone_word_is_a_name_only_under_a_key_that_names_a_person(names: Masker) -> None:
    counts: Counter[str] = Counter()
    value = {"Менеджер": "Ершов", "Должность": "Водитель-экспедитор", "Склад": "Кладовщик", "Город": "Пушкин"}
    assert names.mask_value(value, counts) == {**value, "Менеджер": tag(NAMES_KIND, "Ершов")}
    assert names.mask_value({"ДолжностьСотрудника": "Кладовщик"}, counts) == {"ДолжностьСотрудника": "Кладовщик"}
    assert counts == {NAMES_KIND: 1}


def test_a_one_word_name_in_a_line_needs_the_morphology_tagger_to_call_it_a_proper_noun(names: Masker) -> None:
    for text in ("  Справочник.Контрагенты — Контрагенты", "Приходный кассовый ордер № 118 от 22.04.2024"):
        # The recogniser alone calls "Контрагенты" and "Приходный" persons; in their lines they are no proper nouns.
        assert names_masked(names, text) == (text, Counter())
    result, counts = names_masked(names, "Пропуск заказан на водителя Смирнова")
    assert result == f"Пропуск заказан на водителя {tag(NAMES_KIND, 'Смирнова')}" and counts == {NAMES_KIND: 1}


def test_the_name_of_a_sole_trader_is_masked_where_the_recogniser_sees_an_organisation(names: Masker) -> None:
    text = "Поставщик: ИП Григорьев Максим Олегович. Сервисный центр «Белинский» на пр. Мира."
    result, _ = names_masked(names, text)
    assert result == text.replace("Григорьев Максим Олегович", tag(NAMES_KIND, "Григорьев Максим Олегович"))
    assert names_masked(names, "ИП «Белов и партнёры»")[0] == "ИП «Белов и партнёры»"


def test_names_in_a_call_result_are_masked_in_text_and_structured_content_and_counted(names: Masker) -> None:
    staff = types.CallToolResult.model_validate(onec_data.list_staff({}))
    result = names.mask_call_result(staff)
    shown = result.model_dump_json()
    assert [employee.name for employee in onec_data.STAFF if employee.name in shown] == []
    assert result.meta is not None and list(result.meta[MASKED_META_KEY])[-1] == NAMES_KIND
    assert masked_counts(result)[NAMES_KIND] == 2 * len(onec_data.STAFF)  # the table and structuredContent
    assert "Генеральный директор" in shown and "Бухгалтерия" in shown


def test_names_in_read_and_prompt_results_are_masked(names: Masker) -> None:
    read = types.ReadResourceResult(
        contents=[types.TextResourceContents(uri="file:///c.md", text="Руководитель: Соколов Андрей Михайлович")]
    )
    assert masked_counts(names.mask_read_result(read)) == {NAMES_KIND: 1}
    message = types.PromptMessage(role="user", content=types.TextContent(type="text", text="Письмо для Петровой М. С."))
    prompt = names.mask_prompt_result(types.GetPromptResult(messages=[message]))
    assert masked_counts(prompt) == {NAMES_KIND: 1} and "Петровой" not in prompt.model_dump_json()


def test_the_recogniser_is_loaded_once_per_process(names: Masker) -> None:
    first, second = Masker([NAMES_KIND]), Masker(["inn", NAMES_KIND])
    assert first._names is not None and second._names is not None
    assert first._names._models is second._names._models


def test_the_corpus_names_are_caught_with_few_misses_and_few_words_masked_wrongly(names: Masker) -> None:
    report = score(kinds=KINDS)
    figures = report.kinds[NAMES_KIND]
    assert figures.identifiers >= 60 and figures.negatives >= 150
    # A statistical recogniser: floors, not 100%. What it misses and masks wrongly is in the message.
    assert figures.recall >= 0.95, report.missed
    assert figures.precision >= 0.95, figures
    assert figures.false_positives <= figures.negatives // 50, report.wrongly_masked
    assert all(kind.recall == 1.0 for name, kind in report.kinds.items() if name != NAMES_KIND), report.missed


def test_keys_of_structured_content_are_masked_like_values() -> None:
    masker = Masker(["email", "inn"])
    result = types.CallToolResult(
        content=[], structured_content={"by_email": {"ivanov@mail.example.ru": 3, "ИНН 7707083893": 1}}
    )
    masked = json.dumps(masker.mask_call_result(result).structured_content, ensure_ascii=False)
    assert "ivanov@mail.example.ru" not in masked and "7707083893" not in masked


def test_a_resource_links_words_are_masked_and_its_uri_kept() -> None:
    link = types.ResourceLink(
        type="resource_link", uri="file:///a.txt", name="ivanov@mail.example.ru", description="тел. +7 (495) 788-12-34"
    )
    masked = Masker(["email", "phone"]).mask_call_result(types.CallToolResult(content=[link])).content[0]
    assert isinstance(masked, types.ResourceLink)
    assert masked.name.startswith("[EMAIL#") and "788-12-34" not in (masked.description or "")
    assert str(masked.uri) == "file:///a.txt"


def test_a_prompts_description_is_masked() -> None:
    result = types.GetPromptResult(description="Отчёт для ivanov@mail.example.ru", messages=[])
    assert "ivanov@" not in (Masker(["email"]).mask_prompt_result(result).description or "")


def test_tags_rarely_collide_across_a_thousand_values() -> None:
    masker = Masker(["inn"])
    tags = {masker.tag("inn", f"{n:010d}") for n in range(1000)}
    assert len(tags) >= 999
