import { Result } from "antd";

export function Placeholder({ area, issue }: { area: string; issue: string }) {
  return (
    <Result
      status="info"
      title={area}
      subTitle={`This page arrives with ${issue}. Its place in the navigation is kept for it.`}
    />
  );
}
