// A static single-page app served by core: no server-side rendering, no prerendering.
export const ssr = false;
export const prerender = false;
