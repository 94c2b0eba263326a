import { useCallback, useEffect, useRef, useState } from "react";
import { useSearchParams } from "react-router-dom";

/** Page state kept in the URL's query (tab, filters, sort, range), so a link reproduces
 * the view. Values equal to the default are left out of the URL; changes replace the
 * history entry (the back button leaves the page, it does not undo every keystroke). */
export function useUrlState<T extends Record<string, string>>(
  defaults: T,
): [T, (changes: Partial<Record<keyof T, string | null>>) => void] {
  const [params, setParams] = useSearchParams();
  const state = { ...defaults };
  for (const key of Object.keys(defaults) as (keyof T & string)[]) {
    const value = params.get(key);
    if (value !== null) state[key] = value as T[typeof key];
  }
  const defaultsKey = JSON.stringify(defaults);
  const update = useCallback(
    (changes: Partial<Record<keyof T, string | null>>) => {
      const fallback = JSON.parse(defaultsKey) as T;
      setParams(
        (prev) => {
          const next = new URLSearchParams(prev);
          for (const [key, value] of Object.entries(changes)) {
            if (value === null || value === undefined || value === fallback[key]) next.delete(key);
            else next.set(key, value);
          }
          return next;
        },
        { replace: true },
      );
    },
    [setParams, defaultsKey],
  );
  return [state, update];
}

/** A table column's sort order from the URL's `sort`: "name" ascending, "-name" descending. */
export function sortOrder(sort: string, key: string): "ascend" | "descend" | null {
  if (sort === key) return "ascend";
  if (sort === `-${key}`) return "descend";
  return null;
}

/** The URL's `sort` for what a table's onChange reports (null: unsorted). */
export function sortParam(sorter: { order?: "ascend" | "descend" | null; columnKey?: unknown } | { order?: unknown; columnKey?: unknown }[]): string | null {
  const s = Array.isArray(sorter) ? sorter[0] : sorter;
  if (!s?.order) return null;
  return `${s.order === "descend" ? "-" : ""}${String(s.columnKey)}`;
}

/** A list of ids kept in one query value ("3,5"). */
export function idList(value: string): number[] {
  return value
    .split(",")
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** A text field bound to a URL value (a search): the field holds what is typed and the
 * URL follows. Bound to the URL alone it loses keys typed quickly: the router applies a
 * change a render later, and the field is put back to the older value before the next
 * key lands. A URL value this field did not write (back/forward, a link) replaces it. */
export function useUrlText(value: string, write: (text: string) => void): [string, (text: string) => void] {
  const [text, setText] = useState(value);
  const written = useRef(new Set<string>([value]));
  useEffect(() => {
    if (written.current.has(value)) return;
    written.current = new Set([value]);
    setText(value);
  }, [value]);
  const change = useCallback(
    (next: string) => {
      written.current.add(next);
      setText(next);
      write(next);
    },
    [write],
  );
  return [text, change];
}
