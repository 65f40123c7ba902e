"""HTML pages: upload, result viewer, worklist, downloads, health."""

from __future__ import annotations

import datetime as dt
import io
import logging
import traceback

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.utils import secure_filename

from pneumo.inference import overlay

from app import renditions
from app.context import (
    analyser,
    current_owner,
    current_scope,
    current_user,
    limiter,
    predictor,
    readable_result,
    services,
    settings,
    store,
    team_names,
    upload_limit,
)
from app.service import uploaded_items
from app.store.database import StoreFull, StoreProblem
from app.store.records import REVIEW_REASONS, newest_correction
from app.listing import FILTER_FIELDS, read_filter
from app.store.results import STATUSES, BadCursor, Filter

log = logging.getLogger(__name__)
bp = Blueprint("views", __name__)

DOWNLOADS = {
    "image.png": ("image/png", "xray.png"),
    "overlay.png": ("image/png", "overlay.png"),
    "mask.png": ("image/png", "mask.png"),
    "prob.png": ("image/png", "probability.png"),
    "thumb.jpg": ("image/jpeg", None),
    "mask_rle.txt": ("text/plain", "mask_rle.txt"),
    "view.png": ("image/png", None),  # the viewer's display-size rendition
    "view_mask.png": ("image/png", None),
}


@bp.get("/")
def index():
    """The upload page."""
    current_owner()
    return render_template(
        "upload.html",
        max_files=settings().max_files,
        max_mb=current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024),
        model=predictor().name,
    )


@bp.post("/upload")
@limiter.limit(upload_limit)
def upload():
    """Analyse the uploaded files; one opens its result, several a summary."""
    items = uploaded_items(request.files.getlist("files"))
    outcome = analyser().analyse_many(items, current_owner(), as_batch=True)
    target = None
    if len(outcome.results) == 1 and not outcome.errors and not outcome.batch:
        target = url_for("views.result", result_id=outcome.results[0][1].id)
        services().prerender(outcome.results[0][1])  # the page asks for them next
        if outcome.repeated:
            flash(
                "This file was uploaded before: here is its first result (nothing new was stored)."
            )
    elif outcome.batch:  # a batch has a page of its own: a reload keeps it
        target = url_for("views.batch", batch_id=outcome.batch)
    if target and request.headers.get("X-Requested-With") == "XMLHttpRequest":
        # the page's script goes there itself: a 303 would make it fetch the page once
        # to follow the redirect and then again to show it (twice the work, two views)
        return jsonify(location=target)
    if target:
        return redirect(target, 303)
    return render_template("upload_summary.html", outcome=outcome), outcome.status


@bp.get("/results/<result_id>")
def result(result_id: str):
    """The result page: viewer, verdict, measurements, downloads."""
    row = readable_result(result_id)
    point = row.operating_point or {}
    # stored with the row since the operating point's facts were: the page never waits for
    # (or asks) the live model, which may have changed since the film was read
    mask_threshold = point.get("mask_threshold")
    # results stored before the heat map was scaled by the image probability have no heat_scale
    heat_scale = point.get("heat_scale", 1.0)
    shape = renditions.view_shape((row.meta.get("rows", 0), row.meta.get("columns", 0)))
    user = current_user()
    reviews = store().reviews.for_result(row.id)
    return render_template(
        "result.html",
        r=row,
        point=point,
        mask_threshold=mask_threshold,
        mine=row.owner == current_owner(),
        reviews=reviews,
        corrected=newest_correction(reviews),
        reasons=REVIEW_REASONS,
        can_review=bool(user and user.reads_team),
        heat_scale=heat_scale,
        mask_colour=",".join(map(str, overlay.MASK_COLOUR)),
        contour_colour=",".join(map(str, overlay.CONTOUR_COLOUR)),
        review_colour=",".join(map(str, REVIEW_COLOUR)),
        contour_width=overlay.contour_width(shape),
        opacity=round(100 * overlay.DEFAULT_OPACITY),
    )


@bp.get("/results/<result_id>/identifiers")
def identifiers(result_id: str):
    """Patient identifiers, fetched only when the uploader asks to reveal them."""
    row = readable_result(result_id)
    ids = row.identifiers
    return jsonify(
        {k: ids.get(k) for k in ("patient_name", "patient_id", "birth_date", "accession_number")}
    )


#: The colour of a reviewer's corrected mask in the viewer (the model's is orange).
REVIEW_COLOUR = (0, 190, 255)

#: The newest reviewer's corrected mask: at the image's size (a download) and at the
#: viewer's (its layer); made from the review on each request.
CORRECTED = {
    "corrected_mask.png": ("image/png", "corrected_mask.png"),
    "corrected_view_mask.png": ("image/png", None),
}


@bp.get("/results/<result_id>/files/<name>")
def download(result_id: str, name: str):
    """One file of a result (rendered on first request)."""
    row = readable_result(result_id)
    if name in CORRECTED:
        return _corrected(row, name)
    if name not in DOWNLOADS:
        abort(404)
    mimetype, download_name = DOWNLOADS[name]
    data = renditions.artefact(store().results, row, name)
    if data is None:
        abort(404)
    return _send(row, data, mimetype, download_name)


def _send(row, data: bytes, mimetype: str, download_name: str | None):
    """A result's file: shown in place, or with ``?download=1`` saved under a name made
    from the uploader's file name (for the uploader) or the result id."""
    return send_file(
        io.BytesIO(data),
        mimetype=mimetype,
        as_attachment=bool(download_name) and request.args.get("download") == "1",
        download_name=download_name
        and f"{download_stem(row, row.owner == current_owner())}_{download_name}",
        max_age=0,
    )


def _corrected(row, name: str):
    """The newest corrected mask of a result (404 when no reviewer drew one)."""
    review = newest_correction(store().reviews.for_result(row.id))
    if review is None:
        abort(404, description="No reviewer has saved a corrected mask for this result.")
    if name == "corrected_view_mask.png":
        data = renditions.corrected_view_mask(row, review.corrected_rle)
    else:
        data = renditions.corrected_mask(row, review.corrected_rle)
    return _send(row, data, *CORRECTED[name])


@bp.get("/next-unreviewed")
def next_unreviewed():
    """The newest study the caller may read that nobody has reviewed yet (other than
    ``?after=<id>``, the one on screen), else the worklist saying none is left."""
    after = request.args.get("after", "")
    page = store().results.page(current_scope(), "newest", 2, where=Filter(status="unreviewed"))
    following = next((r for r in page.rows if r.id != after), None)
    if following is None:
        flash("No unreviewed studies left.")
        return redirect(url_for("views.worklist", status="unreviewed"), 303)
    return redirect(url_for("views.result", result_id=following.id), 303)


def download_stem(row, mine: bool = True) -> str:
    """The start of a download's file name: the uploader's own file name without its
    suffix (only letters, digits, '.', '_' and '-'), or the result id when it had none or
    when someone other than the uploader downloads (``mine`` false: a team member; a
    file name may name the patient)."""
    stem = secure_filename(row.file_name.rsplit(".", 1)[0] if row.file_name and mine else "")[:60]
    return stem or row.id[:8]


@bp.get("/results/<result_id>/seg.dcm")
def seg(result_id: str):
    """The result as a DICOM Segmentation (optionally de-identified)."""
    row = readable_result(result_id)
    if row.source_format != "DICOM":
        abort(404, description="A DICOM Segmentation needs a DICOM source image.")
    deidentify = request.args.get("deidentify") == "1"
    try:
        data = renditions.seg_bytes(store().results, row, deidentify=deidentify)
    except renditions.ResultGone:
        abort(404)
    # a de-identified SEG never carries the uploader's file name, which may name the patient
    name = (
        f"{row.id[:8]}_seg_deidentified.dcm"
        if deidentify
        else f"{download_stem(row, row.owner == current_owner())}_seg.dcm"
    )
    return send_file(
        io.BytesIO(data), mimetype="application/dicom", as_attachment=True, download_name=name
    )


@bp.get("/results/<result_id>/<any(sr, sc):kind>.dcm")
def structured(result_id: str, kind: str):
    """The result as a DICOM Structured Report (``sr``) or a Secondary Capture of the
    overlay (``sc``), the objects sent to the PACS beside the SEG."""
    row = readable_result(result_id)
    if row.source_format != "DICOM":
        abort(404, description="DICOM results objects need a DICOM source image.")
    try:
        make = renditions.sr_dataset if kind == "sr" else renditions.sc_dataset
        ds = make(store().results, row)
    except renditions.ResultGone:
        abort(404)
    name = f"{download_stem(row, row.owner == current_owner())}_{kind}.dcm"
    return send_file(
        io.BytesIO(renditions.dataset_bytes(ds)),
        mimetype="application/dicom",
        as_attachment=True,
        download_name=name,
    )


@bp.post("/results/<result_id>/delete")
def delete(result_id: str):
    """Delete a result once the user has confirmed; otherwise ask (no JavaScript needed)."""
    row = readable_result(result_id, manage=True)
    if request.form.get("confirm") != "yes":
        return render_template("delete.html", r=row)
    if not store().delete(result_id, current_scope(manage=True)):
        abort(404)
    flash("Result deleted.")
    return redirect(url_for("views.worklist"), 303)


@bp.get("/batches/<batch_id>")
def batch(batch_id: str):
    """One upload batch: most probable first (or in upload order), with the refused files."""
    info = store().batches.get(batch_id, current_owner())
    if info is None:
        abort(404)
    order = "upload" if request.args.get("order") == "upload" else "probability"
    rows = store().results.list(current_owner(), order, batch=batch_id)
    return render_template("batch.html", batch=info, rows=rows, order=order)


#: Rows per page of the worklist.
WORKLIST_PAGE = 50


@bp.route("/worklist", methods=["GET", "POST"])
def worklist():
    """The results the caller may read, newest or most probable first, a page at a time,
    filtered by review state, verdict, upload days, batch and uploader (the query string)
    and searched by file name, accession number or patient (a POSTed form only, so that
    what is searched for never reaches a URL, a log or the browser's history)."""
    values = request.form if request.method == "POST" else request.args
    sort = values.get("sort", "newest")
    if sort not in ("newest", "probability"):
        sort = "newest"
    cursor = values.get("cursor") or None
    names = team_names()
    owners = {name: owner for owner, name in names.items()}
    chosen = {k: values.get(k, "").strip() for k in FILTER_FIELDS if values.get(k, "").strip()}
    if request.method == "GET":
        chosen.pop("q", None)
    problem, status = None, 200
    try:
        where = read_filter(chosen, owners.get)
    except ValueError as exc:
        problem, status, chosen, where = str(exc), 400, {}, Filter()
    try:
        page = store().results.page(current_scope(), sort, WORKLIST_PAGE, cursor, where=where)
    except BadCursor:
        return redirect(url_for("views.worklist", sort=sort, **without_q(chosen)), 303)
    rows = page.rows
    return render_template(
        "worklist.html",
        rows=rows,
        total=page.total,
        next_cursor=page.next,
        paged=cursor is not None,
        sort=sort,
        batch=chosen.get("batch"),
        chosen=chosen,
        links=without_q(chosen),
        problem=problem,
        names=names,
        statuses=STATUSES,
        me=current_owner(),
        reviews=store().reviews.latest([r.id for r in rows]),
    ), status


def without_q(chosen: dict) -> dict:
    """The filters of a worklist that may go in a link (never the search text)."""
    return {k: v for k, v in chosen.items() if k != "q"}


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico before reading the page's icon link."""
    return redirect(url_for("static", filename="favicon.svg"), 301)


@bp.get("/healthz")
def healthz():
    """The process is up (answers while the model is still loading)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 with the model, device and Keras backend once the model is loaded and warmed
    up, else 503."""
    holder = services().model
    if store().db.damaged:
        return jsonify(
            status="failed", error=f"the results database is damaged: {store().db.damaged}"
        ), 503
    problem = store().health()
    if problem:  # the database server or the blob store cannot be reached now
        return jsonify(status="unavailable", error=problem), 503
    if not holder.ready:
        if holder.error:
            return jsonify(status="failed", error=holder.error), 503
        return jsonify(status="loading"), 503
    p = holder.predictor
    facts = dict(
        status="ready",
        model=p.name,
        device=getattr(p, "device", "unknown"),
        backend=getattr(p, "backend", "unknown"),
        operating_point=p.operating_point.name,
    )
    free = store().free_bytes()
    free_mb = float("inf") if free is None else free / 2**20  # None: object storage
    if free is not None:
        facts["free_disk_mb"] = round(free_mb)
    if free_mb < settings().min_free_mb:  # reading works; new results may not fit
        facts.update(
            status="degraded",
            warning=(
                f"only {free_mb:.0f} MB free under the results (PNEUMO_MIN_FREE_MB="
                f"{settings().min_free_mb}): uploads may be refused; delete or purge "
                "results, or give the data folder more space"
            ),
        )
    return jsonify(facts)


def dicom_date(value: str | None) -> str:
    """A DICOM DA value (YYYYMMDD) as an ISO date; anything else as it is, or a dash."""
    text = (value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or "–"


def middle_ellipsis(name: str, keep: int = 34) -> str:
    """A long file name with its middle left out (``1.2.276.0.7…1517875165.878027.dcm``):
    the end, which tells SIIM-style names apart, stays in view."""
    if len(name) <= keep:
        return name
    head = keep // 3
    return f"{name[:head]}…{name[-(keep - head - 1) :]}"


def iso_time(epoch: float) -> str:
    """Seconds since the epoch as ``YYYY-MM-DD HH:MM`` in UTC (the page's script turns it
    into the reader's own time zone)."""
    return dt.datetime.fromtimestamp(float(epoch), dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def shown_probability(value: float | None) -> str:
    """A calibrated probability to two decimals, never claiming certainty it lacks.

    Rounding 0.996 to "1.00" (or 0.003 to "0.00") would read as certainty; such
    values show as "> 0.99" and "< 0.01".
    """
    if value is None or value != value:
        return "–"
    if value > 0.99:
        return "> 0.99"
    if value < 0.01:
        return "< 0.01"
    return f"{value:.2f}"


def _machine_path() -> bool:
    """Whether the request came to a machine's endpoint (JSON API, DICOMweb): errors as JSON."""
    return request.path.startswith(("/api/", "/dicomweb/"))


def register_error_handlers(app: Flask) -> None:
    """JSON errors for the API, friendly pages elsewhere, never a traceback."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        """An HTTP error as JSON (API) or a page."""
        if isinstance(exc, RequestEntityTooLarge):
            limit = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
            message = f"The upload is too large: at most {limit} MB per request."
            request.close()  # the part of the upload already spooled to a temporary file
        else:
            message = exc.description
        # the error's own headers travel with our body (405's Allow, 401's WWW-Authenticate)
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        if _machine_path():
            return (
                jsonify(error={"code": exc.name.lower().replace(" ", "_"), "message": message}),
                exc.code,
                headers,
            )
        return (
            render_template("error.html", code=exc.code, title=exc.name, message=message),
            exc.code,
            headers,
        )

    @app.errorhandler(StoreFull)
    def disk_full(exc: StoreFull):
        """The disk under the results is full: 503 with what to do, never a generic 500."""
        log.error("storage failure: %s", exc.strerror)
        message = (
            "The server's disk is full, so this could not be saved. Delete results you "
            "no longer need, or ask the administrator to free space."
        )
        if _machine_path():
            return jsonify(error={"code": "storage_unavailable", "message": message}), 503
        return render_template("error.html", code=503, title="Disk full", message=message), 503

    @app.errorhandler(StoreProblem)
    def damaged(exc: StoreProblem):
        """The database broke or cannot be reached: say so (503), never a generic 500."""
        if _machine_path():
            return jsonify(error={"code": exc.code, "message": str(exc)}), exc.http_status
        return render_template(
            "error.html", code=exc.http_status, title="Results unavailable", message=str(exc)
        ), exc.http_status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        """Any other exception: logged without patient data, answered 500 with a plain message."""
        # frames only: exception messages can quote file contents (PHI)
        log.error(
            "unexpected error %s at\n%s",
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        message = "Something went wrong on the server. Nothing was stored; please try again."
        if _machine_path():
            return jsonify(error={"code": "internal_error", "message": message}), 500
        return render_template("error.html", code=500, title="Server error", message=message), 500
