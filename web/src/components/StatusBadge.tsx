import { Badge } from "antd";

export function StatusBadge({ status }: { status: string }) {
  const kind = status === "online" ? "success" : status === "offline" ? "error" : "default";
  return <Badge status={kind} text={status} data-status={status} />;
}
