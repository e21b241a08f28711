"""`vgt demo`: a local web page for text-to-image and inpainting with a VGT pipeline.

Built on the standard library's `http.server` and one self-contained page (`assets/demo/index.html`: HTML, CSS and
a little JavaScript, no CDN, works offline) rather than Gradio: Gradio 6 pins pillow < 13 and would downgrade the
project's pinned pillow 13 (checked with `pip install --dry-run gradio`), it pulls in ~20 packages (FastAPI,
uvicorn, pandas, ...) for one page, and its front end is harder to drive from a browser test than a plain canvas.

API (JSON over HTTP; images are PNG data URLs):

    GET  /                 the page
    GET  /api/info         the model's image size and sampling defaults
    GET  /api/scene?index=N  a ShapesWorld scene (image and caption) to inpaint
    POST /api/generate     {prompt, negative_prompt, seed, guidance_scale, num_inference_steps, tokens_per_step,
                            num_images, image?, mask_image?, strength?, paste_back?} -> {job}
    GET  /api/job/ID       {state: queued|running|done|error, done, total, images, error}

Generations run one at a time on a worker thread (the model is not shared between concurrent calls); the page
polls its job for the decoding progress.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import queue
import threading
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

import torch
from PIL import Image

MAX_IMAGES = 16  # per request
MAX_BODY = 16 * 2**20  # bytes
KEEP_JOBS = 32  # finished jobs kept for polling


def page() -> bytes:
    return resources.files("vgt").joinpath("assets/demo/index.html").read_bytes()


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_from_data_url(text: str, what: str) -> Image.Image:
    if not isinstance(text, str) or not text.startswith("data:image/") or "," not in text:
        raise ValueError(f"{what} must be an image data URL (data:image/png;base64,...)")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(text.split(",", 1)[1], validate=True)))
        image.load()
    except Exception as error:
        raise ValueError(f"{what} is not a readable image: {error}") from None
    return image


@dataclass
class Job:
    request: dict
    state: str = "queued"
    done: int = 0
    total: int = 0
    images: list[str] = field(default_factory=list)
    error: str | None = None

    def public(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "request"}


def _number(request: dict, name: str, kind: type, low: float | None = None, high: float | None = None):
    value = request.get(name)
    if value is None or value == "":
        return None
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def pipeline_arguments(request: dict) -> dict:
    """Checked `VGTPipeline.__call__` arguments from a request (empty fields: the model's defaults)."""
    from vgt.images import to_rgb

    prompt = request.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("type a prompt first")
    seed = _number(request, "seed", int, 0, 2**63 - 1) or 0
    images = _number(request, "num_images", int, 1, MAX_IMAGES) or 1
    kwargs = {"prompt": prompt, "negative_prompt": request.get("negative_prompt") or None,
              "guidance_scale": _number(request, "guidance_scale", float, 0, 100),
              "num_inference_steps": _number(request, "num_inference_steps", int, 1, 1000),
              "tokens_per_step": _number(request, "tokens_per_step", int, 1, 4096),
              "num_images_per_prompt": images,
              "generator": [torch.Generator().manual_seed(seed + i) for i in range(images)]}
    if request.get("image"):
        kwargs["image"] = to_rgb(image_from_data_url(request["image"], "image"))
        if request.get("mask_image"):
            kwargs["mask_image"] = image_from_data_url(request["mask_image"], "mask_image").convert("L")
        kwargs["strength"] = _number(request, "strength", float, 0, 1)
        kwargs["paste_back"] = bool(request.get("paste_back")) and "mask_image" in kwargs
    return kwargs


class DemoServer(ThreadingHTTPServer):
    """The HTTP server plus the one worker thread that runs the pipeline."""

    daemon_threads = True

    def __init__(self, pipe, host: str = "127.0.0.1", port: int = 7860, scene_seed: int = 0):
        super().__init__((host, port), DemoHandler)
        self.pipe = pipe
        self.scene_seed = scene_seed
        self.jobs: dict[str, Job] = {}
        self.queue: queue.Queue[str] = queue.Queue()
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.worker = threading.Thread(target=self._work, name="vgt-demo-worker", daemon=True)
        self.worker.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def info(self) -> dict:
        sampling = self.pipe.generator.config.sampling
        return {"size": sampling.grid_size * self.pipe.ae.stride, "stride": self.pipe.ae.stride,
                "max_images": MAX_IMAGES, "defaults": asdict(sampling)}

    def scene(self, index: int) -> dict:
        from vgt.data.shapes import scene_caption
        from vgt.data.shapes_world import ShapesWorld

        sample = ShapesWorld(resolution=self.info()["size"], seed=self.scene_seed, tasks=("scene",)).sample(index)
        return {"image": png_data_url(sample.image), "caption": scene_caption(sample.scene), "index": index}

    def submit(self, request: dict) -> str:
        with self.lock:  # requests arrive on several threads
            finished = [key for key, job in self.jobs.items() if job.state in ("done", "error")]
            for key in finished[:-KEEP_JOBS]:  # the page fetches its result at once; keep memory bounded
                del self.jobs[key]
            job_id = str(next(self.ids))
            self.jobs[job_id] = Job(request)
        self.queue.put(job_id)
        return job_id

    def _work(self) -> None:
        while True:
            job = self.jobs[self.queue.get()]
            job.state = "running"

            def progress(done: int, total: int, job=job) -> None:
                job.done, job.total = done, total

            try:
                kwargs = pipeline_arguments(job.request)
                images = self.pipe(**kwargs, step_callback=progress).images
                job.images = [png_data_url(image) for image in images]
                job.state = "done"
            except Exception as error:  # reported on the page, like the CLI's one-line errors
                job.error = " ".join(str(error).split()) or type(error).__name__
                job.state = "error"


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer

    def log_message(self, format: str, *args) -> None:  # quiet: one line per request is noise in a terminal
        pass

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: dict, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(data).encode(), "application/json", status)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        if url.path in ("/", "/index.html"):
            self._send(page(), "text/html; charset=utf-8")
        elif url.path == "/api/info":
            self._json(self.server.info())
        elif url.path == "/api/scene":
            try:
                index = int(parse_qs(url.query).get("index", ["0"])[0])
            except ValueError:
                self._json({"error": "index must be a whole number"}, HTTPStatus.BAD_REQUEST)
                return
            self._json(self.server.scene(max(0, index)))
        elif url.path.startswith("/api/job/") and (job := self.server.jobs.get(url.path[len("/api/job/"):])):
            self._json(job.public())
        else:
            self._json({"error": f"no such page: {url.path}"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:  # noqa: N802
        if urlparse(self.path).path != "/api/generate":
            self._json({"error": f"no such endpoint: {self.path}"}, HTTPStatus.NOT_FOUND)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._json({"error": f"the request body must hold 1 byte to {MAX_BODY} bytes"}, HTTPStatus.BAD_REQUEST)
            return
        try:
            request = json.loads(self.rfile.read(length))
            if not isinstance(request, dict):
                raise ValueError("the request must be a JSON object")
        except ValueError as error:
            self._json({"error": f"bad request: {error}"}, HTTPStatus.BAD_REQUEST)
            return
        self._json({"job": self.server.submit(request)})


def serve(pipe, host: str = "127.0.0.1", port: int = 7860) -> DemoServer:
    """A started server (requests are handled on a background thread); stop it with `.shutdown()`."""
    server = DemoServer(pipe, host, port)
    threading.Thread(target=server.serve_forever, name="vgt-demo-http", daemon=True).start()
    return server
