// "No devices yet: here is how to connect one", with this platform's broker address.
import { useEffect, useState } from "react";
import { Card, Empty, Typography } from "antd";
import { api } from "../api/client";

interface Broker {
  host: string;
  port: number;
}

export function brokerFromInfo(
  info: { mqtt: { host?: string | null; port: number } } | undefined,
  location: Pick<Location, "hostname">,
): Broker {
  return {
    host: info?.mqtt.host || location.hostname || "localhost",
    port: info?.mqtt.port ?? 1883,
  };
}

export function useBroker(): Broker {
  const [broker, setBroker] = useState<Broker>(() => brokerFromInfo(undefined, window.location));
  useEffect(() => {
    void api
      .GET("/api/info")
      .then(({ data }) => data && setBroker(brokerFromInfo(data, window.location)))
      .catch(() => undefined);
  }, []);
  return broker;
}

export function ConnectHelp() {
  const { host, port } = useBroker();
  const id = "A4CF12B3C4D5";
  const pub = `mosquitto_pub -h ${host} -p ${port} -q 1 -t devices/${id}/data -m '{"temperature": 21.5, "humidity": 48}'`;
  const info = `mosquitto_pub -h ${host} -p ${port} -q 1 -r -t devices/${id}/info -m '{"type": "esp32-env", "firmware": "1.0.0", "capabilities": ["temperature", "humidity", "relay:light", "servo", "reboot"]}'`;
  return (
    <Card data-testid="connect-help">
      <Empty description="No devices yet. Here is how to connect one." />
      <Typography.Paragraph>
        Devices speak MQTT to the broker at <Typography.Text code>{`${host}:${port}`}</Typography.Text>.
        Flash the firmware in <Typography.Text code>firmware/</Typography.Text> to an ESP32, run
        simulated devices with <Typography.Text code>iotp simulate</Typography.Text>, or publish a
        reading yourself; the device appears here at once:
      </Typography.Paragraph>
      <Typography.Paragraph copyable={{ text: pub }}>
        <pre style={{ whiteSpace: "pre-wrap", wordBreak: "break-all", margin: 0 }}>{pub}</pre>
      </Typography.Paragraph>
      <Typography.Paragraph type="secondary">Describe it (type, firmware, what it can do):</Typography.Paragraph>
      <Typography.Paragraph copyable={{ text: info }}>
        <pre style={{ whiteSpace: "pre-wrap", wordBreak: "break-all", margin: 0 }}>{info}</pre>
      </Typography.Paragraph>
      <Typography.Paragraph type="secondary">
        The device protocol is in docs/protocol.md.
      </Typography.Paragraph>
    </Card>
  );
}
