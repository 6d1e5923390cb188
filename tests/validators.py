"""Real DICOM validators for the objects xrayd writes: PixelMed's SR template validator.

``dciodvfy`` (dicom3tools) checks IODs; it does not check SR templates. PixelMed's
``DicomSRValidator`` (Debian ``pixelmed-apps``) checks the content tree against the templates
(TID 1500, TID 2010 ...): "Error" lines are violations, "Warning: ... Content Item not in
template" lines are items its tables do not list (allowed in an extensible template).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import need, need_tool

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
#: Java 17's XPath limits stop the validator's stylesheets; lift them (FACTS.md).
_JAVA_FLAGS = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)


@dataclass(frozen=True)
class SRReport:
    output: str
    errors: list[str]
    warnings: list[str]


def pixelmed_sr_report(path: Path) -> SRReport:
    """Run PixelMed's DicomSRValidator on ``path`` (skips locally, fails in CI, if missing)."""
    java = shutil.which("java")
    need(
        java is not None and PIXELMED_JAR.is_file(),
        "PixelMed's SR validator needs java and pixelmed.jar "
        "(apt-get install pixelmed-apps default-jre-headless)",
    )
    assert java is not None
    result = subprocess.run(
        [
            java,
            *_JAVA_FLAGS,
            "-cp",
            str(PIXELMED_JAR),
            "com.pixelmed.validate.DicomSRValidator",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert "IOD validation complete" in output, output  # it did run to the end
    lines = output.splitlines()
    return SRReport(
        output=output,
        errors=[line for line in lines if line.startswith("Error")],
        warnings=[line for line in lines if line.startswith("Warning")],
    )


#: Result kinds that are DICOM objects, and those whose content tree PixelMed checks.
DICOM_KINDS = frozenset({"sr", "sc", "pdf", "gsps", "kos"})
SR_KINDS = frozenset({"sr", "kos"})


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's "Error" lines for ``path`` (it writes everything to stderr)."""
    tool = need_tool("dciodvfy")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    report = result.stderr + result.stdout
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors or result.returncode == 0, report
    return errors


def validate_every_object(spool: Any, objects: Iterable[Any]) -> dict[str, int]:
    """Run dciodvfy on every DICOM result object and PixelMed on every SR and KOS; assert no
    errors; return how many objects of each kind were checked."""
    checked: dict[str, int] = {}
    for obj in objects:
        if obj.kind not in DICOM_KINDS:
            continue
        path = Path(spool.absolute(obj.file_path))
        errors = dciodvfy_errors(path)
        assert not errors, (obj.kind, errors)
        if obj.kind in SR_KINDS:
            report = pixelmed_sr_report(path)
            assert not report.errors, (obj.kind, report.output)
        checked[obj.kind] = checked.get(obj.kind, 0) + 1
    return checked
