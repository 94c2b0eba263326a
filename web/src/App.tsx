import { lazy, Suspense, useEffect } from "react";
import { App as AntApp, ConfigProvider, Spin } from "antd";
import { Route, Routes } from "react-router-dom";
import { setErrorReporter } from "./api/errors";
import { useTheme } from "./hooks/useTheme";
import { themeConfig } from "./theme";
import { Shell } from "./components/Shell";
import { AuthGate } from "./components/AuthGate";
import { OverviewPage } from "./pages/overview/OverviewPage";
import { AdminOnly } from "./components/AdminOnly";
import { NotFound } from "./components/NotFound";

// Charts (Recharts) load only with the device page, keeping the first load small.
const DeviceDetailPage = lazy(() => import("./pages/device/DeviceDetailPage"));
const FirmwarePage = lazy(() => import("./pages/firmware/FirmwarePage"));
// The device table (virtual Table, Select, Modal) and the login form load on demand too.
const DevicesPage = lazy(() => import("./pages/devices/DevicesPage"));
const LoginPage = lazy(() => import("./pages/login/LoginPage"));
// Automations, alerts and webhooks.
const RulesPage = lazy(() => import("./pages/rules/RulesPage"));
const AlertsPage = lazy(() => import("./pages/alerts/AlertsPage"));
const WebhooksPage = lazy(() => import("./pages/webhooks/WebhooksPage"));
// Admin pages: users and API keys, device credentials and provisioning.
const UsersPage = lazy(() => import("./pages/users/UsersPage"));
const CredentialsPage = lazy(() => import("./pages/credentials/CredentialsPage"));

function ErrorReporter() {
  const { notification } = AntApp.useApp();
  useEffect(() => {
    setErrorReporter((error) =>
      notification.error({
        key: `api:${error.status}:${error.detail}`,
        message: error.status ? `Request failed (${error.status})` : "Platform unreachable",
        description: error.detail,
        placement: "bottomRight",
      }),
    );
  }, [notification]);
  return null;
}

export function App() {
  const [mode, setMode] = useTheme();
  const loading = <Spin size="large" style={{ display: "block", margin: "20vh auto" }} />;
  return (
    <ConfigProvider theme={themeConfig(mode)}>
      <AntApp>
        <ErrorReporter />
        <Routes>
          <Route path="/login" element={<Suspense fallback={loading}><LoginPage /></Suspense>} />
          <Route
            element={
              <AuthGate>
                <Shell mode={mode} onMode={setMode} />
              </AuthGate>
            }
          >
            <Route index element={<OverviewPage />} />
            <Route path="devices" element={<Suspense fallback={loading}><DevicesPage /></Suspense>} />
            <Route
              path="devices/:id"
              element={
                <Suspense fallback={loading}>
                  <DeviceDetailPage />
                </Suspense>
              }
            />
            <Route
              path="firmware"
              element={
                <Suspense fallback={loading}>
                  <FirmwarePage />
                </Suspense>
              }
            />
            <Route path="automations" element={<Suspense fallback={loading}><RulesPage /></Suspense>} />
            <Route path="alerts" element={<Suspense fallback={loading}><AlertsPage /></Suspense>} />
            <Route path="webhooks" element={<Suspense fallback={loading}><WebhooksPage /></Suspense>} />
            <Route
              path="users"
              element={
                <AdminOnly>
                  <Suspense fallback={loading}>
                    <UsersPage />
                  </Suspense>
                </AdminOnly>
              }
            />
            <Route
              path="credentials"
              element={
                <AdminOnly>
                  <Suspense fallback={loading}>
                    <CredentialsPage />
                  </Suspense>
                </AdminOnly>
              }
            />
            <Route path="*" element={<NotFound />} />
          </Route>
        </Routes>
      </AntApp>
    </ConfigProvider>
  );
}
