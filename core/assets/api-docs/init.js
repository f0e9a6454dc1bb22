/* global SwaggerUIBundle, SwaggerUIStandalonePreset */
// validatorUrl: null keeps the page from sending the spec to an outside validator.
window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
});
