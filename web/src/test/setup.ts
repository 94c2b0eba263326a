import "@testing-library/jest-dom/vitest";

// jsdom lacks these; Ant Design and Recharts need them. Media queries answer as a
// 1280 px wide desktop window, so width-dependent columns show as on a laptop.
const TEST_WIDTH = 1280;
function widthMatches(query: string): boolean {
  const min = /min-width:\s*([\d.]+)px/.exec(query);
  const max = /max-width:\s*([\d.]+)px/.exec(query);
  return (!min || TEST_WIDTH >= Number(min[1])) && (!max || TEST_WIDTH <= Number(max[1])) && Boolean(min || max);
}
if (!window.matchMedia) {
  window.matchMedia = (query: string) =>
    ({
      matches: widthMatches(query),
      media: query,
      onchange: null,
      addListener: () => undefined,
      removeListener: () => undefined,
      addEventListener: () => undefined,
      removeEventListener: () => undefined,
      dispatchEvent: () => false,
    }) as MediaQueryList;
}
class RO {
  observe() {}
  unobserve() {}
  disconnect() {}
}
globalThis.ResizeObserver ??= RO as unknown as typeof ResizeObserver;

// Testing Library cleans up after each test only when test globals are on; do it here.
import { afterEach } from "vitest";
import { cleanup } from "@testing-library/react";
afterEach(() => cleanup());
