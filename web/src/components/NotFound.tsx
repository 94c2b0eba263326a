// What an unknown address shows: said plainly, with the way back (not a silent redirect).
import { Button, Result, Space } from "antd";
import { Link, useLocation } from "react-router-dom";

export function NotFound() {
  const { pathname } = useLocation();
  return (
    <Result
      status="404"
      title="No such page"
      subTitle={
        <span data-testid="not-found">
          There is no page at <code>{pathname}</code>. The link may be old or mistyped.
        </span>
      }
      extra={
        <Space>
          <Link to="/">
            <Button type="primary">Overview</Button>
          </Link>
          <Link to="/devices">
            <Button>Devices</Button>
          </Link>
        </Space>
      }
    />
  );
}
