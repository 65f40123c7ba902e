"""The OpenAPI document of the JSON API and the DICOMweb receiver, in one place.

The result schema is made from :data:`app.store.records.FIELDS`, so the document
cannot drift from what is stored; served at ``/api/v1/openapi.json`` and drawn
by the reference page ``/api/docs``.
"""

from __future__ import annotations

from app.store.records import public_schema

_LINKS = {
    "type": ["object", "null"],
    "description": "URLs of the result's page and files, for the caller's session or "
    "token. null when the call carried neither a bearer token nor a "
    "session cookie: such a call gets no cookie, nothing of it is stored, "
    "and nobody could open the links, so send a token (or first GET /api/v1/csrf-token to start a "
    "session) to read results back later",
    "properties": {
        k: {"type": ["string", "null"] if k == "seg" else "string"}
        for k in ("self", "page", "overlay", "mask", "image", "rle", "seg")
    },
}
_RESULT = dict(public_schema())
_RESULT["properties"] = dict(_RESULT["properties"], links=_LINKS)
_RESULT["required"] = sorted(_RESULT["properties"])
#: A result in the answer to an upload: says whether the file was sent before.
_POSTED = dict(_RESULT)
_POSTED["properties"] = dict(
    _RESULT["properties"],
    uploaded_before={
        "type": "boolean",
        "description": "true: the same file or DICOM instance was uploaded before by the "
        "caller or its team, and this is that first result (nothing new was stored)",
    },
)
_POSTED["required"] = sorted(_POSTED["properties"])
_ERROR = {
    "type": "object",
    "properties": {
        "file": {"type": ["string", "null"]},
        "code": {"type": "string"},
        "message": {"type": "string"},
    },
}


def _page(following: str) -> dict:
    """The answer of one page of a list: its results, the total, and ``following`` (the
    next page's URL or cursor; null on the last)."""
    return {
        "description": "one page",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "results": {"type": "array"},
                        "total": {"type": "integer"},
                        following: {"type": ["string", "null"]},
                    },
                }
            }
        },
    }


#: The filters of a list of predictions (app.listing.read_filter).
_FILTERS = [
    {
        "name": "status",
        "in": "query",
        "schema": {"type": "string", "enum": ["unreviewed", "reviewed", "disagreed"]},
        "description": "review state: no review yet, reviewed, a reviewer disagreed",
    },
    {
        "name": "verdict",
        "in": "query",
        "schema": {"type": "string", "enum": ["positive", "negative"]},
        "description": "positive: pneumothorax suspected",
    },
    {
        "name": "from",
        "in": "query",
        "schema": {"type": "string", "format": "date"},
        "description": "uploaded on or after this day (UTC)",
    },
    {
        "name": "to",
        "in": "query",
        "schema": {"type": "string", "format": "date"},
        "description": "uploaded on or before this day (UTC)",
    },
    {"name": "batch", "in": "query", "schema": {"type": "string"}, "description": "one batch"},
    {
        "name": "uploader",
        "in": "query",
        "schema": {"type": "string"},
        "description": "a user name of the caller's team (for a radiologist or an admin)",
    },
]

OPENAPI = {
    "openapi": "3.1.0",
    "info": {
        "title": "pneumo API",
        "version": "1",
        "description": "Pneumothorax segmentation of chest X-rays. Decision support, "
        "not a diagnosis.",
    },
    "paths": {
        "/api/v1/predictions": {
            "post": {
                "summary": "Analyse one or many DICOM/PNG/JPEG files",
                "requestBody": {
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "files": {
                                        "type": "array",
                                        "items": {"type": "string", "format": "binary"},
                                    }
                                },
                            }
                        }
                    }
                },
                "responses": {
                    "200": {
                        "description": "every file was uploaded before by the caller or its "
                        "team: each result is the first copy's (`uploaded_before`: true), "
                        "nothing new is stored"
                    },
                    "201": {
                        "description": "at least one file analysed (a result with "
                        "`uploaded_before`: true is the first copy of a file sent before)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "batch": {
                                            "type": ["string", "null"],
                                            "description": "the batch id when several files were "
                                            "sent (its page: /batches/<id>), else null",
                                        },
                                        "results": {"type": "array", "items": _POSTED},
                                        "errors": {"type": "array", "items": _ERROR},
                                    },
                                }
                            }
                        },
                    },
                    "400": {"description": "no file, or unreadable image"},
                    "413": {"description": "too large or too many files"},
                    "415": {"description": "not a DICOM, PNG or JPEG"},
                    "422": {
                        "description": "DICOM that cannot be shown (colour, multi-frame, no pixels)"
                    },
                },
            },
            "get": {
                "summary": "The caller's predictions, a page at a time: `total` counts them "
                "all, `next` is the URL of the next page (null on the last); every "
                "prediction is on exactly one page while new ones arrive",
                "parameters": [
                    {
                        "name": "sort",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["newest", "probability"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        "description": "predictions per page (default 200)",
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "where the page starts: from the previous page's `next`",
                    },
                    *_FILTERS,
                ],
                "responses": {"200": _page("next")},
            },
        },
        "/api/v1/predictions/search": {
            "post": {
                "summary": "The caller's predictions searched by file name, accession number "
                "or patient (`q`, in the body so that it never goes in a URL), with the "
                "filters and paging of GET /api/v1/predictions; the next page: send "
                "`next_cursor` as `cursor`",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "q": {"type": "string", "maxLength": 100},
                                    **{f["name"]: f["schema"] for f in _FILTERS},
                                    "sort": {"type": "string", "enum": ["newest", "probability"]},
                                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                                    "cursor": {"type": "string"},
                                },
                            }
                        }
                    }
                },
                "responses": {
                    "200": _page("next_cursor"),
                    "400": {"description": "not a JSON object, or a bad filter, limit or cursor"},
                },
            },
        },
        "/api/v1/csrf-token": {
            "get": {
                "summary": "The browser session's CSRF token: a POST that carries the "
                "session cookie sends it as X-CSRF-Token (bearer calls need none)",
                "responses": {
                    "200": {
                        "description": "the token",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"csrf_token": {"type": "string"}},
                                }
                            }
                        },
                    }
                },
            },
        },
        "/api/v1/predictions/{id}": {
            "get": {
                "summary": "One prediction of the caller",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "the prediction",
                        "content": {"application/json": {"schema": _RESULT}},
                    },
                    "404": {"description": "unknown, or another user's"},
                },
            },
        },
    },
}

#: STOW-RS (:mod:`app.dicomweb`).
STOW_PATHS = {
    "/dicomweb/studies": {
        "post": {
            "summary": "STOW-RS: store DICOM instances, each analysed like an upload",
            "description": "DICOMweb Store (PS3.18 §10.5). Needs `Authorization: Bearer "
            "<token>`; the token's user owns the results. Failure Reason "
            "codes: 0xA700 out of resources (too large), 0xA900 data set does "
            "not match (colour, multi-frame), 0xC000 cannot understand (not "
            "DICOM), 0x0122 SOP class not supported (no image), 0x0110 "
            "processing failure. Reasons in words come in `Warning: 299` "
            "headers.",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {
                    'multipart/related; type="application/dicom"': {
                        "schema": {"type": "string", "format": "binary"}
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "all instances stored and analysed",
                    "content": {
                        "application/dicom+json": {
                            "schema": {
                                "type": "object",
                                "description": "DICOM JSON with ReferencedSOPSequence (00081199)",
                            }
                        }
                    },
                },
                "202": {
                    "description": "some stored; FailedSOPSequence (00081198) lists "
                    "the others with FailureReason (00081197)"
                },
                "409": {"description": "no instance could be stored"},
                "400": {"description": "malformed multipart body"},
                "401": {"description": "missing or unknown API token"},
                "413": {"description": "request too large or too many instances"},
                "415": {"description": "not multipart/related with application/dicom parts"},
            },
        },
    },
}
OPENAPI["paths"].update(STOW_PATHS)

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_REVIEW = {
    "type": "object",
    "properties": {
        "reviewer": {"type": "string"},
        "created": {"type": "number"},
        "agrees": {"type": "boolean"},
        "reason": {"type": ["string", "null"]},
        "corrected_mask": {"type": "boolean"},
        "corrected_mask_rle": {
            "type": ["string", "null"],
            "description": "the reviewer's corrected mask: SIIM relative RLE, column-major, at "
            "the image's size (-1 if empty); null without one",
        },
        "corrected_mask_png": {
            "type": "string",
            "description": "in the list of reviews, on the newest review with a corrected "
            "mask: the URL of that mask as a PNG at the image's size",
        },
    },
}
#: The radiologist's review and the running agreement (:mod:`app.review`).
REVIEW_PATHS = {
    "/api/v1/predictions/{id}/review": {
        "post": {
            "summary": "Agree or disagree with a prediction (radiologists and admins of "
            "its team), with an optional corrected mask",
            "parameters": [_ID],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["agrees"],
                            "properties": {
                                "agrees": {"type": "boolean"},
                                "reason": {
                                    "type": "string",
                                    "enum": ["missed", "false_alarm", "wrong_extent", "other"],
                                    "description": "required when disagreeing",
                                },
                                "mask_png": {
                                    "type": "string",
                                    "description": "PNG data URL of the "
                                    "corrected mask at the viewer's size (painted: opaque, "
                                    "or bright in a PNG without alpha)",
                                },
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": {
                    "description": "the review kept",
                    "content": {"application/json": {"schema": _REVIEW}},
                },
                "400": {"description": "a bad review (reason, mask)"},
                "403": {"description": "the caller may not review"},
                "404": {"description": "unknown, or another team's"},
            },
        }
    },
    "/api/v1/predictions/{id}/reviews": {
        "get": {
            "summary": "Every reviewer's verdict on a prediction",
            "parameters": [_ID],
            "responses": {
                "200": {
                    "description": "the reviews",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"reviews": {"type": "array", "items": _REVIEW}},
                            }
                        }
                    },
                },
                "404": {"description": "unknown, or another team's"},
            },
        }
    },
    "/api/v1/agreement": {
        "get": {
            "summary": "The model's sensitivity and specificity against the team's "
            "reviews, per operating point",
            "parameters": [
                {"name": "days", "in": "query", "schema": {"type": "number", "exclusiveMinimum": 0}}
            ],
            "responses": {
                "200": {"description": "the agreement"},
                "403": {"description": "the caller may not review"},
            },
        }
    },
}
OPENAPI["paths"].update(REVIEW_PATHS)

#: How a caller proves who it is: an API token (``pneumo create-token``), or the browser's
#: session cookie (whose POSTs carry X-CSRF-Token).
OPENAPI["components"] = {
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"},
        "session": {"type": "apiKey", "in": "cookie", "name": "session"},
    }
}
OPENAPI["security"] = [{"bearer": []}, {"session": []}]
#: Answers any operation may give.
_COMMON = {
    "401": "no valid token or session (once accounts exist)",
    "429": "too many requests: wait as the Retry-After header says",
    "503": "the results database or disk is unavailable, or the server is busy",
}
for _path, _ops in OPENAPI["paths"].items():
    for _op in _ops.values():
        for _code, _words in _COMMON.items():
            _op["responses"].setdefault(_code, {"description": _words})
        if _path == "/api/v1/predictions" and "parameters" in _op:
            _op["responses"].setdefault(
                "400", {"description": "an unknown sort, a limit out of range or a bad cursor"}
            )
