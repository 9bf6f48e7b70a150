"""The postal address in a real browser, at phone width (Chromium through Playwright, as in
test_desk_browser.py): Today's banner leads to the newsletter's Sender box, the address typed there on
three lines is saved, and the banners go. Screenshots go to tests/screenshots/."""

from __future__ import annotations

import pytest

from conftest import SHOTS, sign_in_browser
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.newsletters import lists

expect = pytest.importorskip("playwright.sync_api").expect  # the `browser` fixture says how to install it
PASSWORD = "correct horse battery"


def fits(page) -> bool:
    """Nothing sticks out sideways: the page reads without scrolling left and right."""
    return page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


def test_an_editor_follows_todays_warning_and_gives_the_address_on_a_phone(browser, served, svc):
    with transaction(svc.Session) as session:
        editors.add(session, "ada", PASSWORD)
        lists.add_newsletter(session, slug="morning", name="The Morning Briefing", from_address="news@example.com")
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    sign_in_browser(phone, served, "ada", PASSWORD)

    warning = phone.locator("#no-postal-address")
    expect(warning).to_contain_text("No postal address")
    phone.screenshot(path=str(SHOTS / "postal-address-today-phone.png"), full_page=True)
    assert fits(phone)  # the screenshot above shows what sticks out, if anything
    warning.get_by_role("link", name="The Morning Briefing").click()
    phone.wait_for_url(served + "/desk/newsletters/morning#postal")
    expect(phone.locator("#no-postal-address")).to_be_visible()

    address = "Example News\n1 Main St\nSpringfield, IL 62701"
    phone.fill("textarea[name=postal_address]", address)
    phone.screenshot(path=str(SHOTS / "postal-address-newsletter-phone.png"), full_page=True)
    assert fits(phone)
    phone.click("#settings button[type=submit]")
    phone.wait_for_url(served + "/desk/newsletters/morning?saved=1")
    expect(phone.locator("#no-postal-address")).to_have_count(0)
    expect(phone.locator("textarea[name=postal_address]")).to_have_value(address)
    phone.goto(served + "/desk")
    expect(phone.locator("#no-postal-address")).to_have_count(0)
