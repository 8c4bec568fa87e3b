"""The gallery in a real browser (Debian's chromium + chromium-driver, driven by Selenium).

Open a collection of two, see both portraits, open one, pick the second candidate (refine ->
finish run again), try a celebrity's name (refused on screen), give it another name, approve;
the token appears on the page and exactly one token exists on the local chain for the job.
Screenshots of each step are saved under the test's tmp dir and ``test-artifacts/gallery/``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak
from web3 import Web3

from ganfolk.v1 import jobs_pb2
from tests.e2e.stack import Models, tiny_models
from tests.gallery.stack import TOKEN, Stack, collection_awaiting_review, gallery_stack, wait_job
from tests.mint.fixtures import anvil  # noqa: F401  (session fixture)

S = jobs_pb2
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "gallery"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (scripts/setup.sh)"
)
CONTRACT_ABI = [
    {
        "name": "tokenOfKey",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "name": "totalMinted",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return tiny_models(tmp_path_factory.mktemp("gallery-browser-models"))


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(120)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
async def stack(
    models: Models,
    nats_server: Any,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    async with gallery_stack(models, nats_server.url, tmp_path / "objects", anvil.url) as s:
        yield s


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    return path


def check_accessibility(driver: Any) -> None:
    """Every image has alt text; every control a label (or visible text, for buttons)."""
    from selenium.webdriver.common.by import By

    for img in driver.find_elements(By.TAG_NAME, "img"):
        assert (img.get_attribute("alt") or "").strip(), img.get_attribute("outerHTML")
    for control in driver.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), textarea, select"):
        cid = control.get_attribute("id")
        labelled = cid and driver.find_elements(By.CSS_SELECTOR, f'label[for="{cid}"]')
        assert labelled or control.get_attribute("aria-label"), control.get_attribute("outerHTML")
    for button in driver.find_elements(By.TAG_NAME, "button"):
        assert (button.text or button.get_attribute("aria-label") or "").strip(), button.get_attribute(
            "outerHTML"
        )
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"


async def until(predicate: Callable[[], Any], timeout: float = 240, what: str = "") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    while True:
        try:
            value = await asyncio.to_thread(predicate)
        except (StaleElementReferenceException, NoSuchElementException):
            value = None  # the page was (re)loading: ask again
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def test_review_a_collection_in_the_browser(
    stack: Stack,
    driver: Any,
    anvil: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    parent, (first, second) = await collection_awaiting_review(stack)
    d = driver

    def page(path: str) -> None:
        d.get(stack.url + path)

    await asyncio.to_thread(page, f"/collections/{parent.job_id}")
    assert "Sign in" in d.title
    d.find_element(By.ID, "token").send_keys(TOKEN)
    await asyncio.to_thread(d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click)
    await until(lambda: "Collection" in d.title, 30, "the collection after sign-in")

    # Both portraits, with their names and loaded images.
    tiles = d.find_elements(By.CSS_SELECTOR, "ul.grid li.tile")
    assert len(tiles) == 2
    for child in (first, second):
        assert f"{child.first_name} {child.last_name}" in d.page_source
    await until(
        lambda: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
            for i in d.find_elements(By.CSS_SELECTOR, "ul.grid img")
        ),
        30,
        "thumbnails",
    )
    check_accessibility(d)
    screenshot(d, tmp_path, "01-collection")

    # Open the first portrait and pick the second candidate.
    await asyncio.to_thread(d.find_element(By.CSS_SELECTOR, f'a[href="/jobs/{first.job_id}"]').click)
    await until(lambda: d.find_elements(By.ID, "approve"), 30, "the portrait page")
    check_accessibility(d)
    screenshot(d, tmp_path, "02-portrait")
    await asyncio.to_thread(d.find_element(By.CSS_SELECTOR, 'button[data-candidate="1"]').click)
    # The page follows the re-run through server-sent events and reloads when review is back.
    # The flash, unless the tiny models were so quick that the page already reloaded.
    await until(
        lambda: (
            "Refining candidate 2" in d.page_source
            or "chosen" in d.find_element(By.CSS_SELECTOR, "ol.candidates li:nth-child(2)").text
        ),
        30,
        "the page after choosing",
    )
    screenshot(d, tmp_path, "03-refining-candidate-2")
    await until(
        lambda: (
            d.find_elements(By.ID, "approve")
            and "chosen" in d.find_element(By.CSS_SELECTOR, "ol.candidates li:nth-child(2)").text
        ),
        240,
        "review again after the re-run",
    )
    job = await wait_job(stack, first.job_id, {S.JOB_STATE_AWAITING_REVIEW})
    rank = next(s for s in job.stages if s.stage == S.STAGE_RANK)
    assert job.best_sample.uri == rank.images[1].uri and job.review_round == 1
    assert job.final_image.uri != first.final_image.uri  # a new portrait; the old one is in its history
    assert "chosen" in d.find_element(By.CSS_SELECTOR, "ol.candidates li:nth-child(2)").text
    screenshot(d, tmp_path, "04-candidate-2-chosen")

    # A celebrity's name is refused, on screen, with the reason.
    for field, value in (("first_name", "Albert"), ("last_name", "Einstein")):
        box = d.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    await asyncio.to_thread(d.find_element(By.ID, "save-edits").click)
    error = await until(lambda: d.find_elements(By.ID, "review-error"), 60, "the refusal")
    assert "refused" in error[0].text and "notable" in error[0].text
    screenshot(d, tmp_path, "05-famous-name-refused")

    for field, value in (("first_name", "Maren"), ("last_name", "Quillfeather")):
        box = d.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    await asyncio.to_thread(d.find_element(By.ID, "save-edits").click)
    await until(lambda: "Maren Quillfeather" in d.find_element(By.ID, "person-name").text, 60, "the new name")
    screenshot(d, tmp_path, "06-renamed")

    await asyncio.to_thread(d.find_element(By.ID, "approve").click)
    token_id = await until(
        lambda: d.find_elements(By.ID, "token-id") and d.find_element(By.ID, "token-id").text,
        240,
        "the token",
    )
    check_accessibility(d)
    d.execute_script("document.getElementById('token').scrollIntoView()")
    screenshot(d, tmp_path, "07-minted")

    job = await wait_job(stack, first.job_id, {S.JOB_STATE_SUCCEEDED})
    assert job.token.token_id == token_id and (job.first_name, job.last_name) == ("Maren", "Quillfeather")
    # Exactly one token on the chain for this job: the contract maps the job id to it, and
    # this stack's fresh contract has minted nothing else.
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    contract = w3.eth.contract(address=Web3.to_checksum_address(job.token.contract_address), abi=CONTRACT_ABI)
    assert contract.functions.tokenOfKey(keccak(text=job.job_id)).call() == int(token_id)
    assert contract.functions.totalMinted().call() == 1
    other = await wait_job(stack, second.job_id, {S.JOB_STATE_AWAITING_REVIEW})
    assert not other.token.token_id
