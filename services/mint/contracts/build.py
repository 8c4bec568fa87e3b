"""Compile GanfolkPortraits.sol with solcjs (npm ``solc``) into GanfolkPortraits.json.

    python -m services.mint.contracts.build            # rewrite the committed artifact
    python -m services.mint.contracts.build --check    # exit 1 when it is stale

The compiler, its settings and the OpenZeppelin sources come from the exact versions
pinned in package.json, so the output is byte-for-byte reproducible; the test suite
recompiles and compares against the committed file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SOURCE = HERE / "GanfolkPortraits.sol"
ARTIFACT = HERE / "GanfolkPortraits.json"
CONTRACT = "GanfolkPortraits"
# Cancun: supported by Polygon PoS and by anvil; PUSH0/MCOPY need Shanghai/Cancun.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}

# Runs in node: compile standard JSON from stdin, resolving imports from node_modules.
_NODE = r"""
const fs = require('fs'), path = require('path');
const root = process.argv[1];
const solc = require(path.join(root, 'node_modules', 'solc'));
function findImports(p) {
  const file = p.startsWith('@') ? path.join(root, 'node_modules', p)
                                 : path.join(root, 'services/mint/contracts', p);
  try { return {contents: fs.readFileSync(file, 'utf8')}; } catch (e) { return {error: 'not found: ' + p}; }
}
const out = JSON.parse(solc.compile(fs.readFileSync(0, 'utf8'), {import: findImports}));
out.solcVersion = solc.version();
process.stdout.write(JSON.stringify(out));
"""


def compile_artifact() -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "solc").exists():
        raise RuntimeError("node and npm packages are needed: run `npm ci` in the repository root")
    standard = {
        "language": "Solidity",
        "sources": {f"{CONTRACT}.sol": {"content": SOURCE.read_text()}},
        "settings": SETTINGS,
    }
    proc = subprocess.run(
        [node, "-e", _NODE, str(ROOT)], input=json.dumps(standard), capture_output=True, text=True, check=True
    )
    out = json.loads(proc.stdout)
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError(
            "solc failed:\n" + "\n".join(e.get("formattedMessage", e["message"]) for e in errors)
        )
    compiled = out["contracts"][f"{CONTRACT}.sol"][CONTRACT]
    openzeppelin = json.loads((ROOT / "node_modules/@openzeppelin/contracts/package.json").read_text())
    return {
        "contractName": CONTRACT,
        "compiler": {
            "solc": out["solcVersion"],
            "openzeppelin": openzeppelin["version"],
            "settings": SETTINGS,
        },
        "abi": compiled["abi"],
        "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
    }


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail when the committed artifact is stale")
    args = parser.parse_args(argv)
    text = render(compile_artifact())
    if args.check:
        if not ARTIFACT.exists() or ARTIFACT.read_text() != text:
            print(f"{ARTIFACT.relative_to(ROOT)} is stale: run python -m services.mint.contracts.build")
            return 1
        print(f"{ARTIFACT.relative_to(ROOT)} is current")
        return 0
    ARTIFACT.write_text(text)
    print(f"wrote {ARTIFACT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
