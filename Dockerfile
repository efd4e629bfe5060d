# Governor: multi-stage build. `npm run build` writes dist/ (compiled src/, no tests);
# the runtime image holds dist/ and production dependencies only, runs as a non-root
# user, and needs no writable filesystem (the serving certificate comes from a Secret
# or is kept in memory; logs go to stdout).
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No scripts: the sources are not copied yet (the project's `prepare` builds them below).
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# The image's `node` user (uid 1000); the Deployment also sets runAsNonRoot and
# readOnlyRootFilesystem.
USER 1000:1000
EXPOSE 6443 8080
ENTRYPOINT ["node", "/app/dist/main.js"]
CMD ["run"]
