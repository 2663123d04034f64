// Swagger UI for Parley's spec, served by this same server (no CDN).
window.ui = SwaggerUIBundle({
  url: new URL("../openapi.json", window.location.href).toString(),
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  displayOperationId: true,
  tryItOutEnabled: true,
});
