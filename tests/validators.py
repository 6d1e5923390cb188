"""Real DICOM validators for the objects xrayd writes: PixelMed's SR template validator.

``dciodvfy`` (dicom3tools) checks IODs; it does not check SR templates. PixelMed's
``DicomSRValidator`` (Debian ``pixelmed-apps``) checks the content tree against the templates
(TID 1500, TID 2010 ...): "Error" lines are violations, "Warning: ... Content Item not in
template" lines are items its tables do not list (allowed in an extensible template).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from helpers import need

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
