FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY worker worker
COPY shared shared
COPY cli cli
COPY client client
RUN pip install --no-cache-dir .
ENV CHATGW_HOST=0.0.0.0
EXPOSE 8000
CMD ["chatgw", "gateway"]
