"""Prints the pinned requirements of pyproject.toml with the given extras, one a line: what
an image installs before the project's wheel (deploy/Dockerfile); with --build-backend also
the build backend's, which scripts/images.sh downloads into the wheelhouse as well.

    python3 deploy/requirements.py pyproject.toml cpu,boost [--build-backend]
"""

import sys
import tomllib


def requirements(pyproject_path: str, extras: str, build_backend: bool) -> list[str]:
    with open(pyproject_path, "rb") as f:
        pyproject = tomllib.load(f)
    project = pyproject["project"]
    wanted = list(project["dependencies"])
    for extra in filter(None, extras.split(",")):
        wanted += project["optional-dependencies"][extra]
    if build_backend:
        wanted += pyproject["build-system"]["requires"]
    return wanted


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2], "--build-backend" in sys.argv[3:])))
