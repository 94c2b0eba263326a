import { Tooltip } from "antd";
import { relativeTime, useNow } from "../hooks/useNow";

export function RelativeTime({ iso }: { iso: string | null | undefined }) {
  const now = useNow();
  const text = relativeTime(iso, now);
  return iso ? (
    <Tooltip title={new Date(iso).toLocaleString()}>
      <time dateTime={iso}>{text}</time>
    </Tooltip>
  ) : (
    <span>{text}</span>
  );
}
