// Renders the dashboard's HistoryChart with N points (?n=10000) and reports how long
// it took from render start to the first frame after React committed it.
import { useLayoutEffect } from "react";
import { createRoot } from "react-dom/client";
import { HistoryChart, type BandPoint } from "../src/pages/device/HistoryChart";

declare global {
  interface Window {
    __benchResult?: { points: number; ms: number; paths: number };
  }
}

const n = Number(new URLSearchParams(location.search).get("n") ?? 10000);
const start0 = Date.parse("2026-01-01T00:00:00Z");
const data: BandPoint[] = Array.from({ length: n }, (_, i) => {
  const avg = 20 + 5 * Math.sin(i / 50) + Math.random();
  return { t: start0 + i * 60_000, avg, range: [avg - 1 - Math.random(), avg + 1 + Math.random()] };
});

function Done({ t0 }: { t0: number }) {
  useLayoutEffect(() => {
    // ResponsiveContainer draws once it has measured its box: wait for the drawn paths.
    const check = () => {
      const paths = document.querySelectorAll(".recharts-curve, .recharts-area-area").length;
      if (paths >= 2) window.__benchResult = { points: n, ms: performance.now() - t0, paths };
      else requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  }, [t0]);
  return null;
}

const t0 = performance.now();
createRoot(document.getElementById("root")!).render(
  <>
    <HistoryChart data={data} name="temperature" fromMs={data[0]!.t} toMs={data[data.length - 1]!.t} height={300} />
    <Done t0={t0} />
  </>,
);
