// The API reference: Swagger UI on the app's own OpenAPI document. No validator badge (it
// would call an outside server); "Try it out" sends the page's session cookie and, for
// uploads, the session's CSRF token as the result page does.
(function () {
  "use strict";
  const root = document.getElementById("swagger-ui");
  let csrf = null;
  fetch("/api/v1/csrf-token", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : {})).then((d) => { csrf = d.csrf_token || null; })
    .catch(() => {});
  window.ui = SwaggerUIBundle({
    url: root.dataset.url,
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    requestInterceptor: (req) => {
      if (csrf && req.method && req.method.toUpperCase() !== "GET") req.headers["X-CSRF-Token"] = csrf;
      return req;
    },
  });
})();
