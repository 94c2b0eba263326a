import { Tooltip } from "antd";
import { relativeTime, useNow } from "../hooks/useNow";
import { formatDateTime } from "../api/time";

export function RelativeTime({ iso }: { iso: string | null | undefined }) {
  const now = useNow();
  const text = relativeTime(iso, now);
  return iso ? (
    <Tooltip title={formatDateTime(iso)}>
      <time dateTime={iso}>{text}</time>
    </Tooltip>
  ) : (
    <span>{text}</span>
  );
}
