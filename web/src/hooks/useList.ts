import { useCallback, useEffect, useState } from "react";
import type { ApiError } from "../api/errors";

/** What an API call's failure says, for an error line. */
export function errorText(exc: unknown): string {
  return (exc as ApiError).detail ?? String(exc);
}

/** A list loaded from the API on mount: rows (null while loading), the last error, and
 * refresh(). A failed load shows the error and an empty list; a reload that brings the
 * same rows keeps the old array (no re-render when polling finds nothing new). */
export function useList<T>(load: () => Promise<T[]>) {
  const [rows, setRows] = useState<T[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const refresh = useCallback(async () => {
    try {
      const next = await load();
      setRows((prev) => (prev && JSON.stringify(prev) === JSON.stringify(next) ? prev : next));
    } catch (exc) {
      setError(errorText(exc));
      setRows((r) => r ?? []);
    }
  }, [load]);
  useEffect(() => {
    void refresh();
  }, [refresh]);
  return { rows, error, setError, refresh };
}
