{#- One row per (spend_date, channel) of the valid marketing spend rows, with the counted orders
    of that channel and order_date attributed to it (contract: marts.fct_marketing_performance).
    roas is rounded to 6 decimal places so both warehouses store the same number. -#}
with spend as (
    select
        spend_date,
        channel,
        {{ sum_money('spend') }} as spend,
        {{ sum_integer('impressions') }} as impressions,
        {{ sum_integer('clicks') }} as clicks
    from {{ ref('stg_marketing_spend') }}
    group by spend_date, channel
),

attributed as (
    select
        order_date,
        channel,
        count(*) as attributed_orders,
        {{ sum_money('amount_paid') }} as attributed_revenue
    from {{ ref('fct_orders') }}
    where {{ is_counted_order('status') }}
    group by order_date, channel
)

select
    spend.spend_date,
    spend.channel,
    spend.spend,
    spend.impressions,
    spend.clicks,
    cast(coalesce(attributed.attributed_orders, 0) as bigint) as attributed_orders,
    {{ money('coalesce(attributed.attributed_revenue, 0)') }} as attributed_revenue,
    case
        when spend.spend = 0 then null
        else cast(coalesce(attributed.attributed_revenue, 0) / spend.spend as numeric(18, 6))
    end as roas
from spend
left join attributed
    on
        spend.spend_date = attributed.order_date
        and spend.channel = attributed.channel
