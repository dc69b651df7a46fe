"""Personal-data masking: what is masked, what must survive, and how results carry the counts.

Every identifier here is invented, with valid check digits unless a test says otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from typing import Any

import pytest
from mcp import types

from py_server.config import PII_KINDS, Settings
from py_server.demo import onec_data
from py_server.masking import (
    MASKED_META_KEY,
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
    assert masker().tag("phone", "74957881234") == f"[ТЕЛЕФОН#{digest[:4]}]"
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
    for unchanged in (1, 2, 3, 5):
        assert result.content[unchanged] == original.content[unchanged]
    assert result.structured_content == {
        "rows": [{"ИНН": inn, "Номер": INN10_BY_CHANCE, "Счет": tag("account", ACCOUNT)}],
        "count": 1,
    }
    assert result.meta == {"ru.1c.demo/truncated": True, MASKED_META_KEY: {"account": 1, "inn": 3}}
    assert masked_counts(result) == {"account": 1, "inn": 3}
    wire = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["_meta"][MASKED_META_KEY] == {"account": 1, "inn": 3}


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
    assert masked_counts(result) == {"phone": 1, "inn": 1}
    assert masker().mask_prompt_result(types.GetPromptResult(messages=original.messages[2:])).meta is None


def test_masked_counts_is_empty_for_a_result_without_them() -> None:
    assert masked_counts(types.CallToolResult(content=[], _meta={MASKED_META_KEY: "garbage"})) == {}
    assert masked_counts(types.ReadResourceResult(contents=[])) == {}


# --- the corpus -----------------------------------------------------------------------------


def test_the_corpus_labels_every_kind_with_identifiers_whose_check_digits_are_valid() -> None:
    pii = [(kind, normalized(kind, value)) for document in load_corpus() for kind, value in document.pii]
    assert {kind for kind, _ in pii} == set(PII_KINDS)
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
