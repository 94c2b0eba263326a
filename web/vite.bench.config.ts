// Builds the chart benchmark page (bench/web.py), outside the app's dist/.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  root: "bench",
  base: "./",
  plugins: [react()],
  build: { outDir: "../bench-dist", emptyOutDir: true, rollupOptions: { input: "bench/chart.html" } },
});
