// Starts Swagger UI for /docs. A file of its own, not an inline script, so the page runs
// under a Content-Security-Policy without 'unsafe-inline' scripts (api/security_headers.py).
// persistAuthorization stays off: a key typed into Authorize must not be kept in
// localStorage, where any page of this origin could read it. validatorUrl null: no badge
// fetched from swagger.io.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
