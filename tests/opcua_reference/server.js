// An OPC UA server that is not built on asyncua: node-opcua with its own Alarms & Conditions
// implementation (OPC 10000-9). Tests start it to check the driver against an independent server.
//
//   node server.js <port>
//
// Listens on 127.0.0.1:<port>; prints "READY <namespace index>" when it accepts sessions. Two
// furnaces, each a Temperature variable (Double) with a standard ExclusiveLimitAlarmType condition
// (HighLimit 80, LowLimit -50) that node-opcua evaluates itself when the value changes. Commands on
// stdin, one per line:
//   set <furnace 1|2> <temperature>   write the temperature (crossing 80 raises, going below clears)
"use strict";
const readline = require("readline");
const { OPCUAServer, DataType, nodesets } = require("node-opcua");

async function main() {
    const port = parseInt(process.argv[2], 10);
    const server = new OPCUAServer({
        port,
        host: "127.0.0.1",
        hostname: "127.0.0.1", // the endpoints it advertises: only the loopback address
        nodeset_filename: [nodesets.standard],
        serverInfo: { applicationUri: "urn:edge-agent:test:node-opcua" },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    addressSpace.installAlarmsAndConditionsService(); // binds ConditionRefresh
    const namespace = addressSpace.getOwnNamespace();
    const limitType = addressSpace.findEventType("ExclusiveLimitAlarmType");
    const temperatures = {};
    for (const n of [1, 2]) {
        const furnace = namespace.addObject({
            browseName: `Furnace${n}`,
            nodeId: `s=Furnace${n}`,
            organizedBy: addressSpace.rootFolder.objects,
            eventNotifier: 1,
            notifierOf: addressSpace.rootFolder.objects.server,
        });
        const temperature = namespace.addVariable({
            browseName: "Temperature",
            nodeId: `s=Furnace${n}.Temperature`,
            componentOf: furnace,
            dataType: "Double",
            eventSourceOf: furnace,
            value: { dataType: DataType.Double, value: 20.0 },
        });
        namespace.instantiateExclusiveLimitAlarm(limitType, {
            browseName: "TemperatureHigh",
            nodeId: `s=Furnace${n}.TemperatureHigh`,
            componentOf: furnace,
            conditionName: "TemperatureHigh",
            conditionSource: temperature,
            inputNode: temperature,
            highLimit: 80.0,
            lowLimit: -50.0,
        });
        temperatures[n] = temperature;
    }
    await server.start();
    process.stdout.write(`READY ${namespace.index}\n`);
    const lines = readline.createInterface({ input: process.stdin });
    lines.on("line", (line) => {
        const [cmd, which, value] = line.trim().split(/\s+/);
        if (cmd === "set" && temperatures[which]) {
            temperatures[which].setValueFromSource({ dataType: DataType.Double, value: parseFloat(value) });
            process.stdout.write(`OK ${line.trim()}\n`);
        } else {
            process.stdout.write(`ERROR unknown command: ${line.trim()}\n`);
        }
    });
    lines.on("close", async () => {
        await server.shutdown(0);
        process.exit(0);
    });
}

main().catch((err) => {
    process.stderr.write(`${err.stack || err}\n`);
    process.exit(1);
});
