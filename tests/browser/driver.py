#!/usr/bin/env python3
"""Drives Debian's headless Chromium through Selenium (python3-selenium, chromium-driver) for tests/browser.

    driver.py URL PROGRAM.json OUT.json

PROGRAM is a list of steps, run in order against the page at URL:
    {"wait": "<js expression>", "timeout": 20}   poll until the expression is truthy (error on timeout)
    {"eval": "<js function body>", "as": "name"} run it (`return ...`), store the result under name
    {"sleep": 1.5}                               seconds
    {"screenshot": "/path/file.png"}             the visible window
OUT gets {"results": {name: value, ...}, "console_errors": [...]} or {"error": "..."} and the exit code is 1.
Stdout is left to Chromium's own chatter; only OUT is read by the tests.
"""
import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def main() -> int:
    url, program_path, out_path = sys.argv[1:4]
    program = json.load(open(program_path))
    options = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--allow-file-access-from-files", "--no-first-run", "--disable-extensions"]:
        options.add_argument(a)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    results = {}
    try:
        driver.get(url)
        for step in program:
            if "wait" in step:
                deadline = time.time() + float(step.get("timeout", 20))
                while not driver.execute_script("return !!(" + step["wait"] + ")"):
                    if time.time() > deadline:
                        raise TimeoutError("timed out after %ss waiting for: %s" % (step.get("timeout", 20), step["wait"]))
                    time.sleep(0.1)
            elif "eval" in step:
                results[step["as"]] = driver.execute_script(step["eval"])
            elif "sleep" in step:
                time.sleep(float(step["sleep"]))
            elif "screenshot" in step:
                driver.save_screenshot(step["screenshot"])
            else:
                raise ValueError("unknown step %r" % step)
        errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        json.dump({"results": results, "console_errors": errors}, open(out_path, "w"))
        return 0
    except Exception as e:  # reported to the test, which prints it
        errors = []
        try:
            errors = [e2["message"] for e2 in driver.get_log("browser") if e2.get("level") == "SEVERE"]
        except Exception:
            pass
        json.dump({"error": "%s: %s" % (type(e).__name__, e), "results": results, "console_errors": errors},
                  open(out_path, "w"))
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
