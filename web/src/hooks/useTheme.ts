import { useEffect, useState } from "react";

export type ThemeMode = "light" | "dark";
const KEY = "iotp.theme";

function initial(): ThemeMode {
  const saved = localStorage.getItem(KEY);
  if (saved === "light" || saved === "dark") return saved;
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function useTheme(): [ThemeMode, (mode: ThemeMode) => void] {
  const [mode, setMode] = useState<ThemeMode>(initial);
  useEffect(() => {
    document.documentElement.dataset.theme = mode;
    document.documentElement.style.colorScheme = mode;
  }, [mode]);
  return [
    mode,
    (next) => {
      localStorage.setItem(KEY, next);
      setMode(next);
    },
  ];
}
