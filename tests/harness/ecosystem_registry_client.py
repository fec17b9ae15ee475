"""comfy-cli's own publish-side functions, called offline in a pack checkout (the current folder).

Runs with the ecosystem tools venv's python (``harness/ecosystem_tools.py``), never in the test
process: it imports ``comfy_cli``.

    python ecosystem_registry_client.py request   # the publish request `comfy node publish` would send
    python ecosystem_registry_client.py archive   # the zip `comfy node publish` would upload

Each prints one JSON object on its last line of stdout.

``request`` runs ``RegistryAPI.publish_node_version`` on the parsed pyproject.toml with the HTTP
call replaced: the client-side checks run for real (a missing PublisherId or project name raises
there) and the body it would POST is reported, the token left out. ``archive`` calls
``zip_files(NODE_ZIP_FILENAME, includes=...)`` exactly as ``publish`` does (git-tracked files,
``.comfyignore`` honoured, ``[tool.comfy] includes`` added) and lists the zip.
"""
from __future__ import annotations

import json
import sys
import zipfile


def request() -> dict:
    import requests
    from comfy_cli.registry.api import RegistryAPI, RegistryAPIError
    from comfy_cli.registry.config_parser import extract_node_configuration

    config = extract_node_configuration()
    if config is None:
        return {"ok": False, "error": "no pyproject.toml could be parsed"}
    sent = {}

    class NotSent:
        status_code = 599
        text = "not sent: offline dry run"

    def capture(url, headers=None, data=None, timeout=None):
        sent.update(url=url, body=json.loads(data))
        return NotSent()

    requests.post = capture
    try:
        RegistryAPI().publish_node_version(config, token="dry-run-token")
    except RegistryAPIError as e:
        if not sent:
            return {"ok": False, "error": str(e)}
    if not sent:
        return {"ok": False, "error": "publish_node_version neither sent nor refused"}
    body = sent["body"]
    body.pop("personal_access_token", None)
    path = sent["url"].split("/publishers/", 1)[-1]
    return {"ok": True, "path": "/publishers/" + path, **body}


def archive() -> dict:
    from comfy_cli.constants import NODE_ZIP_FILENAME
    from comfy_cli.file_utils import zip_files
    from comfy_cli.registry.config_parser import extract_node_configuration

    config = extract_node_configuration()
    if config is None:
        return {"ok": False, "error": "no pyproject.toml could be parsed"}
    includes = config.tool_comfy.includes if config.tool_comfy else []
    zip_files(NODE_ZIP_FILENAME, includes=includes)
    with zipfile.ZipFile(NODE_ZIP_FILENAME) as z:
        files = {i.filename: i.file_size for i in z.infolist() if not i.is_dir()}
    return {"ok": True, "zip": NODE_ZIP_FILENAME, "includes": list(includes), "files": files}


if __name__ == "__main__":
    commands = {"request": request, "archive": archive}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(commands)}}}")
    print(json.dumps(commands[sys.argv[1]]()))
